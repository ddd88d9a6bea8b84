"""Every key and value of the command line is checked: a misspelled key is an error with the closest keys, never a
no-op, and an out-of-range value (seed, model kwargs, optimizer and schedule parameters, a 5,000-character option)
is one line and exit status 2 before any work.

Most checks call the validation in-process (imgcls_cli.commands.overrides, the registries, `imgcls_cli.cli.main` with
`--cfg job`); a few subprocess runs show what a user sees: status 2, one stderr line, no traceback.
"""
from __future__ import annotations

import math
import re

import pytest
import torch

from conftest import TINY_SETTINGS_NO_EPOCHS, assert_user_error, run_in_one_process
from imgcls_cli import cli
from imgcls_cli.errors import UserError, as_int
from imgcls_cli.models import MAX_PARAMETERS, create_model
from imgcls_cli.optim import build_optimizer
from imgcls_cli.commands.overrides import FREE_KEYS, MAX_OPTION_CHARS, check_command_line
from imgcls_cli.registry import Registry
from imgcls_cli.specs.optimizer import OptimizerSpec
from imgcls_cli.specs.schedule import ScheduleSpec

SMALL = {"num_classes": 3, "in_channels": 1, "image_size": 16}


def refused(command: str, *args: str) -> str:
    with pytest.raises(UserError) as info:
        check_command_line(command, list(args))
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------------ unknown keys
@pytest.mark.parametrize("args,expected", [
    (["+epoch=3"], "unknown key 'epoch'. Did you mean epochs?"),  # the trap: 10 epochs, silently
    (["++epoch=3"], "unknown key 'epoch'. Did you mean epochs?"),
    (["+model.widht=3"], "unknown key 'model.widht'. Did you mean model.widths"),
    (["+optimizer.momentum=0.5"], "It is a key of optimizer=rmsprop, sgd, not of optimizer=adam."),
    (["optimizer=sgd", "+optimizer.betas=[0.9,0.99]"], "It is a key of optimizer=adam, adamw, not of optimizer=sgd"),
    (["+schedule.gama=0.5", "schedule=step"], "Did you mean schedule.gamma?"),
    (["+augment.vflip.q=0.5"], "unknown key 'augment.vflip.q'. Did you mean augment.vflip.p"),
    (["+augment.flip.p=0.5"], "unknown key 'augment.flip.p'"),
    (["+distributed.nprocs=2"], "Did you mean distributed.nproc?"),
    (["-m", "+epoch=1,2"], "unknown key 'epoch'"),  # a sweep: refused before its first job
    (["-m", "model=resnet,simple_cnn", "++model.width=8"], "unknown key 'model.width' with model=simple_cnn"),
])
def test_added_unknown_train_keys_are_refused_with_the_closest_keys(args, expected):
    message = refused("train", *args)
    assert expected in message
    assert "`imgcls train --help` lists the keys" in message


@pytest.mark.parametrize("command,args,expected", [
    ("eval", ["checkpoint=x.pt", "+dataset.in_memry=false"], "Did you mean dataset.in_memory"),
    # mnist has its official test split: a test_fraction would be read by nothing
    ("eval", ["checkpoint=x.pt", "dataset=mnist", "+dataset.test_fraction=0.3"], "It is a key of dataset=csv"),
    ("eval", ["checkpoint=x.pt", "+batch_sizes=8"], "Did you mean batch_size?"),
    ("predict", ["checkpoint=x.pt", "inputs=a", "+top_k=3"], "Did you mean topk?"),
])
def test_added_unknown_eval_and_predict_keys_are_refused(command, args, expected):
    message = refused(command, *args)
    assert expected in message and f"`imgcls {command} --help`" in message


@pytest.mark.parametrize("command,args", [
    ("train", ["++epochs=3"]),  # ++ sets an existing key
    ("train", ["epochs=3", "model=resnet", "model.depth=34"]),  # plain keys: Hydra checks them, no composition
    ("train", ["+experiment=digits_fast"]),  # a group selection, not a key
    ("train", ["model=tv", "+model.dropout=0.2"]),  # torchvision's own kwargs (its builder checks them)
    ("train", ["+augment.vflip.p=0.5", "+augment.rotation.degrees=5", "+augment.mix_prob=0.5"]),  # ops: registry
    ("train", ["-m", "model=resnet,resnet18", "++model.width=8"]),  # a key of every swept model
    ("eval", ["checkpoint=x.pt", "+dataset.in_memory=false"]),  # the README's: a key of the checkpoint's dataset
    ("eval", ["checkpoint=x.pt", "+dataset.root=/data", "+dataset.mean=[0.5]"]),
    ("eval", ["checkpoint=x.pt", "dataset=digits", "+dataset.in_memory=false", "dataset.test_fraction=0.3"]),
])
def test_keys_that_exist_or_are_free_pass(command, args):
    check_command_line(command, args)


def test_the_free_key_groups_are_named():
    assert set(FREE_KEYS) == {"dataset", "augment", "model"}


@pytest.mark.parametrize("argv,expected", [
    (["train", "epoch=3"], "error: unknown key 'epoch'. Did you mean epochs?"),
    (["train", "modle=resnet"], "error: unknown key 'modle'. Did you mean model?"),
    (["train", "~model.widthz"], "error: unknown key 'model.widthz'. Did you mean model.widths"),
    (["train", "+epoch=3"], "error: unknown key 'epoch'. Did you mean epochs?"),
    (["eval", "checkpoint=x.pt", "dataset.in_memory=false"],
     "error: 'dataset.in_memory' is not in the composed config but may be added: write +dataset.in_memory=false"),
    (["train", "-m", "seed=1,2"], "error: Only one of --run, --multirun, --cfg"),  # Hydra's refusal, one line
])
def test_cfg_job_refuses_an_unknown_key_in_one_line(argv, expected, capsys):
    assert cli.main([*argv, "--cfg", "job"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(expected), err


def test_cfg_job_still_prints_a_config_with_free_and_existing_keys(capsys):
    assert cli.main(["eval", "checkpoint=x.pt", "+dataset.in_memory=false", "--cfg", "job"]) == 0
    assert "in_memory: false" in capsys.readouterr().out


def test_a_sweep_with_a_key_of_each_swept_model_says_to_add_it_to_every_job(tmp_path, capsys):
    # Hydra composes the sweep first with model at its default (simple_cnn, which has no width): it refuses, and
    # the way out (++) is said; no job runs.
    status = cli.main(["train", "-m", "model=resnet,resnet18", "model.width=8", *TINY_SETTINGS_NO_EPOCHS[:2],
                       "epochs=1", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert status == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "write ++model.width=8 to set it in every job" in err[0], err
    assert not list(tmp_path.rglob("*.pt"))


# ------------------------------------------------------------------------------------- values out of range
def test_seed_and_whole_numbers_are_bounded():
    for value in (99999999999999999999, 2**63):
        with pytest.raises(UserError, match=r"^seed must be a whole number in \[0, 4294967295\], not 9"):
            as_int(value, "seed", minimum=0, maximum=2**32 - 1)
        with pytest.raises(UserError, match=r"^epochs must be a whole number <= 9223372036854775807"):
            as_int(value, "epochs")  # beyond 64 bits for every key
    assert as_int(2**32 - 1, "seed", minimum=0, maximum=2**32 - 1) == 2**32 - 1


@pytest.mark.parametrize("kwargs,expected", [
    ({"drop_rate": 1.5}, "model.drop_rate must be a probability in [0, 1), not 1.5."),
    ({"drop_rate": 1.0}, "model.drop_rate must be a probability in [0, 1)"),
    ({"drop_rate": -0.1}, "model.drop_rate must be a probability in [0, 1)"),
    ({"drop_rate": "high"}, "model.drop_rate must be a number, not 'high'."),
    ({"widths": [8, 0]}, "model.widths must be a whole number in [1, 65536], not 0."),
    ({"widths": [8, -4]}, "model.widths must be a whole number in [1, 65536]"),
    ({"widths": 8}, "model.widths must be a list of whole numbers >= 1"),
    ({"widths": [8, 2.5]}, "model.widths must be a whole number, not 2.5."),
    ({"hidden": 10**7}, "model.hidden must be a whole number in [1, 65536]"),
    ({"batch_norm": "false"}, "model.batch_norm must be true or false, not 'false'."),
    ({"num_classes": 0}, "model.num_classes must be a whole number in [1, 65536]"),
    ({"widths": [40000, 40000, 40000]}, f"more than the {MAX_PARAMETERS:.3g} a model may have"),
])
def test_model_kwargs_out_of_range_are_one_line(kwargs, expected):
    for for_checkpoint in (False, True):  # a checkpoint's kwargs meet the same checks
        with pytest.raises(UserError) as info:
            create_model("simple_cnn", for_checkpoint=for_checkpoint, **{**SMALL, **kwargs})
        assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name,kwargs,expected", [
    ("resnet", {"depth": 152, "width": 512}, "parameters, more than the"),
    ("resnet", {"width": 0}, "model.width must be a whole number in [1, 65536]"),
    ("efficientnet", {"drop_path_rate": 2}, "model.drop_path_rate must be a probability in [0, 1)"),
    ("densenet_bc_100", {"compression": 0}, "model.compression must be in (0, 1]"),
    ("resnet9", {"head_scale": math.inf}, "model.head_scale must be a positive number"),
    ("vgg11", {"drop_rate": 1.5}, "model.drop_rate must be a probability in [0, 1)"),
])
def test_every_family_checks_its_kwargs_before_building(name, kwargs, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        create_model(name, **{**SMALL, **kwargs})


def test_checked_models_build_the_same_weights():
    torch.manual_seed(0)
    checked = create_model("simple_cnn", **SMALL)
    torch.manual_seed(0)
    from imgcls_cli.models import MODELS

    plain = MODELS.get("simple_cnn")(**SMALL)
    for (name, a), (_, b) in zip(checked.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("cfg,expected", [
    ({"name": "sgd", "lr": 0.1, "momentum": 5}, "optimizer.momentum must be in [0, 1) (0.9 is usual), not 5."),
    ({"name": "sgd", "lr": 0.1, "momentum": 1.0}, "optimizer.momentum must be in [0, 1)"),
    ({"name": "rmsprop", "lr": 0.1, "momentum": 1.5}, "optimizer.momentum must be in [0, 1)"),
    ({"name": "rmsprop", "lr": 0.1, "alpha": 5}, "optimizer.alpha must be in [0, 1), not 5."),
    ({"name": "adam", "lr": 0.1, "betas": [0.9, 5]}, "optimizer.betas must be in [0, 1), not 5."),
    ({"name": "adam", "lr": 0.1, "eps": -1}, "optimizer.eps must be positive, not -1."),
    ({"name": "adam", "lr": 0.1, "weight_decay": 5}, "optimizer.weight_decay must be in [0, 1]"),
    ({"name": "adamw", "lr": math.inf}, "optimizer.lr must be positive, not inf."),
    ({"name": "adamw", "lr": "nan"}, "optimizer.lr must be positive, not 'nan'."),
    ({"name": "adam", "lr": 0.1, "grad_clip_norm": -1}, "optimizer.grad_clip_norm must be positive"),
])
def test_optimizer_values_out_of_range_are_one_line(cfg, expected):
    for check in (OptimizerSpec.parse, lambda c: build_optimizer(torch.nn.Linear(3, 2), OptimizerSpec.parse(c), 8)):
        with pytest.raises(UserError) as info:
            check(cfg)
        assert str(info.value).startswith(expected) and "\n" not in str(info.value)


@pytest.mark.parametrize("cfg,expected", [
    ({"name": "step", "gamma": 5}, "schedule.gamma must be in (0, 1] (the lr is multiplied by it at each drop)"),
    ({"name": "multistep", "gamma": 1.5}, "schedule.gamma must be in (0, 1]"),
    ({"name": "step", "step_size": math.inf}, "schedule.step_size must be positive"),
    ({"name": "cosine", "warmup_epochs": math.inf}, "schedule.warmup_epochs must be >= 0, not inf."),
    ({"name": "cosine", "warmup_epochs": "nan"}, "schedule.warmup_epochs must be >= 0, not nan."),
    ({"name": "exponential", "k": math.inf}, "schedule.k must be >= 0"),
    ({"name": "onecycle", "pct_start": 2}, "schedule.pct_start must be in [0, 1)"),
    ({"name": "cosine", "min_lr_ratio": -0.5}, "schedule.min_lr_ratio must be in [0, 1]"),
])
def test_schedule_values_out_of_range_are_one_line(cfg, expected):
    with pytest.raises(UserError) as info:
        ScheduleSpec.parse(cfg)
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------- long options
def test_a_5000_character_option_is_refused_before_hydra_reads_it():
    for arg in ("model.name=" + "a" * 5000, "seed=" + "9" * 5000, "dataset=" + "a" * 5000):
        message = refused("train", arg)
        assert f"is longer than {MAX_OPTION_CHARS} characters" in message and len(message) < 300


def test_a_config_option_longer_than_a_file_name_is_an_unknown_option():
    message = refused("train", "dataset=" + "b" * 300)
    assert message.startswith("unknown dataset 'bbbb") and "(300 characters)" in message and len(message) < 300


def test_long_names_are_cut_in_registry_messages():
    registry = Registry("model")
    registry.register("simple_cnn")(lambda: None)
    message = registry.unknown_message("x" * 3000)
    assert "(3000 characters)" in message and len(message) < 300


def test_a_file_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    assert cli._guard(lambda: open(tmp_path / ("n" * 300), "w")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: a file name is too long for the file system"), err


# ------------------------------------------------------------------------------------- what a user sees
CLI_CASES = {
    # name: (arguments after `imgcls`, what the one stderr line mentions)
    "misspelled_key": (["train", "epoch=3"], ["unknown key 'epoch'", "Did you mean epochs?", "imgcls train --help"]),
    "added_misspelled_key": (["train", "+epoch=3"], ["unknown key 'epoch'", "Did you mean epochs?"]),
    "seed": (["train", *TINY_SETTINGS_NO_EPOCHS, "epochs=1", "seed=99999999999999999999"],
             ["seed must be a whole number", "99999999999999999999"]),
    "drop_rate": (["train", *TINY_SETTINGS_NO_EPOCHS, "epochs=1", "model.drop_rate=1.5"],
                  ["model.drop_rate must be a probability in [0, 1)", "1.5"]),
    "momentum": (["train", *TINY_SETTINGS_NO_EPOCHS, "epochs=1", "optimizer=sgd", "optimizer.momentum=5"],
                 ["optimizer.momentum must be in [0, 1)", "5"]),
    "gamma": (["train", *TINY_SETTINGS_NO_EPOCHS, "epochs=1", "schedule=step", "schedule.gamma=10"],
              ["schedule.gamma must be in (0, 1]"]),
    "long_option": (["train", "model.name=" + "a" * 5000], ["longer than 4096 characters"]),
    "long_dataset_name": (["train", "dataset=" + "a" * 300], ["unknown dataset", "(300 characters)"]),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    base = tmp_path_factory.mktemp("trust_config")
    return run_in_one_process({name: (args, base / name) for name, (args, _) in CLI_CASES.items()})


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_what_a_user_sees_is_one_line_and_status_2(cli_results, case):
    result = cli_results[case]
    assert_user_error(result, *CLI_CASES[case][1])
    assert not list(result.cwd.rglob("*.pt")), result.describe()  # refused before any checkpoint
