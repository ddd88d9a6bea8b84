"""The config -> TrainSpec boundary, in-process: configs composed with hydra.compose as `imgcls train` composes them
(as lightning-hydra-template's conftest does), parsed as the command parses them. Every option of every group
parses; each bad value is the one-line error a user reads, word for word. No subprocess: these take milliseconds,
so that subprocess tests are kept for what only a process shows (exit status, stderr, run directories)."""
from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from imgcls_cli.commands.common import plain
from imgcls_cli.commands.train import asked_image_size, dataset_configs, explicit_keys
from imgcls_cli.errors import UserError
from imgcls_cli.paths import CONF_DIR
from imgcls_cli.specs.dataset import DatasetSpec
from imgcls_cli.specs.loop import BNRecalibrateSpec, DistributedSpec, EarlyStoppingSpec, EmaSpec
from imgcls_cli.specs.optimizer import OptimizerSpec
from imgcls_cli.specs.schedule import ScheduleSpec
from imgcls_cli.specs.train import TrainSpec
from imgcls_cli.specs.transfer import DistillSpec, DomainSpec, FinetuneSpec

GROUPS = ("model", "dataset", "augment", "optimizer", "schedule", "experiment")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]


@pytest.fixture(scope="module")
def train_config():
    """config(*overrides) -> the plain config `imgcls train <overrides>` runs with.

    Hydra composes each choice of group options once (a composition takes ~0.2 s); the key=value overrides are
    parsed by Hydra's own override parser and set on a copy, as the composition would set them."""
    parser = OverridesParser.create()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="train"):
        composed = functools.lru_cache(maxsize=None)(lambda groups: compose("train", overrides=list(groups)))

        def config(*overrides: str) -> dict:
            parsed_overrides = parser.parse_overrides(list(overrides))
            groups = tuple(o.input_line for o in parsed_overrides if o.key_or_group in GROUPS or o.is_add())
            cfg = copy.deepcopy(composed(groups))
            for override in parsed_overrides:
                if override.input_line not in groups:
                    OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
            return plain(cfg)

        yield config


@pytest.fixture(scope="module")
def datasets():
    return dataset_configs()


def parsed(train_config, datasets, *overrides: str) -> TrainSpec:
    return TrainSpec.parse(train_config(*overrides), explicit_keys(list(overrides)), datasets)


def test_the_default_config_parses_into_its_values(train_config, datasets):
    spec = parsed(train_config, datasets)
    assert (spec.epochs, spec.batch_size, spec.eval_batch_size, spec.seed) == (10, None, 512, 0)
    assert spec.optimizer == OptimizerSpec("adam", 0.001, None, False, None, 1, 0.0, 0.0, 0.0, False,
                                           {"betas": (0.9, 0.999), "eps": 1e-8})
    assert spec.schedule == ScheduleSpec("cosine", 0.0, {"min_lr_ratio": 0.0})
    assert (spec.finetune, spec.distill, spec.domain) == (FinetuneSpec(), DistillSpec(), None)
    assert (spec.early_stopping, spec.ema, spec.bn_recalibrate) == (EarlyStoppingSpec(), EmaSpec(), BNRecalibrateSpec())
    assert spec.distributed == DistributedSpec()
    assert (spec.device, spec.precision, spec.channels_last, spec.num_workers) == ("auto", "auto", "auto", "auto")
    assert (spec.compile, spec.tensorboard, spec.on_nan, spec.tta, spec.topk) == (False, False, "stop", "none", 5)
    assert (spec.init, spec.resume, spec.every_n_steps, spec.val_every) == (None, None, 0, 1)
    assert spec.dataset.name == "digits" and spec.model.name == "simple_cnn" and spec.augment.name == "none"
    assert spec.config == train_config() and spec.explicit_keys == frozenset()


def test_a_spec_is_frozen(train_config, datasets):
    spec = parsed(train_config, datasets)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.epochs = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.optimizer.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_of_every_group_composes_and_parses(train_config, datasets, group, option):
    override = f"+experiment={option}" if group == "experiment" else f"{group}={option}"
    spec = parsed(train_config, datasets, override)
    if group == "model":
        assert spec.model.name == OmegaConf.load(CONF_DIR / "model" / f"{option}.yaml")["name"]
    elif group == "dataset":
        assert spec.dataset.name == OmegaConf.load(CONF_DIR / "dataset" / f"{option}.yaml")["name"]
    elif group in ("augment", "optimizer", "schedule"):
        assert getattr(spec, group).name == option
    else:  # an experiment's own values
        config = train_config(override)
        assert (spec.epochs, spec.batch_size) == (config["epochs"], config["batch_size"])


def test_command_line_values_reach_the_spec(train_config, datasets):
    spec = parsed(train_config, datasets, "epochs=3", "batch_size=48", "seed=7", "optimizer=sgd", "optimizer.lr=0.05",
                  "optimizer.nesterov=true", "optimizer.accumulate_steps=2", "optimizer.grad_clip_norm=1",
                  "schedule=step", "schedule.warmup_epochs=1", "ema.decay=0.99", "early_stopping.patience=2",
                  "early_stopping.metric=val_loss", "finetune.freeze=encoder", "init=x.pt", "distill.teacher=t.pt",
                  "compile=true", "bn_recalibrate=false", "checkpoint.every_n_steps=5", "precision=fp32")
    assert (spec.epochs, spec.batch_size, spec.seed, spec.precision, spec.compile) == (3, 48, 7, "fp32", True)
    assert spec.optimizer.kwargs == {"momentum": 0.9, "nesterov": True} and spec.optimizer.lr == 0.05
    assert (spec.optimizer.accumulate_steps, spec.optimizer.grad_clip_norm) == (2, 1.0)
    assert spec.schedule == ScheduleSpec("step", 1.0, {"step_size": 5.0, "gamma": 0.1})
    assert spec.ema == EmaSpec(0.99, True) and spec.early_stopping == EarlyStoppingSpec("val_loss", "min", 2)
    assert spec.finetune.frozen_at(1) and spec.init == "x.pt" and spec.distill.teacher == "t.pt"
    assert spec.bn_recalibrate.when is False and spec.every_n_steps == 5
    assert {"epochs", "optimizer", "optimizer.lr", "init"} <= spec.explicit_keys


def test_base_lr_scales_with_the_images_per_step(train_config, datasets):
    spec = parsed(train_config, datasets, "+optimizer.base_lr=0.1", "optimizer.accumulate_steps=2")
    assert spec.optimizer.lr is None and spec.optimizer.lr_for(64) == pytest.approx(0.1 * 128 / 256)


def test_the_domain_target_comes_with_its_composed_dataset_config(train_config, datasets):
    spec = parsed(train_config, datasets, "domain.target=digits_inverted", "domain.lambda=0.5")
    shared = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml"))["dataset"]
    own = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / "digits_inverted.yaml"))
    target = DatasetSpec.from_config({**shared, **own})
    assert spec.domain == DomainSpec("digits_inverted", None, 0.5, True, 256, target)
    # what `dataset=digits_inverted` composes (the engine gives it the source's size, limits and placement)
    assert spec.domain.target_dataset == DatasetSpec.from_config(train_config("dataset=digits_inverted")["dataset"])
    at_root = parsed(train_config, datasets, "domain.target=csv", "domain.target_root=/data/target.csv")
    assert at_root.domain.target_dataset.file == "/data/target.csv"


def test_image_size_follows_the_model_unless_the_command_line_sets_it(train_config, datasets):
    spec = parsed(train_config, datasets, "model=efficientnet_b1")
    assert asked_image_size(spec, None) == 240  # EfficientNet-B1's resolution
    assert asked_image_size(parsed(train_config, datasets, "model=efficientnet_b1", "dataset.image_size=32"),
                            None) is None
    assert asked_image_size(parsed(train_config, datasets), None) is None  # simple_cnn takes the dataset's size
    assert asked_image_size(spec, {"input": {"size": 24}}) == 24  # init=PATH's size first


# (overrides, the whole error line). Each is what `imgcls train <overrides>` prints after "error: ".
REFUSED = [
    (["epochs=0"], "epochs must be a whole number >= 1, not 0."),
    (["epochs=2.5"], "epochs must be a whole number, not 2.5."),
    (["batch_size=0"], "batch_size must be a whole number in [1, 65536], not 0."),
    (["batch_size=big"], "batch_size must be a whole number, not 'big'."),
    (["eval_batch_size=0"], "eval_batch_size must be a whole number >= 1, not 0."),
    (["seed=-1"], "seed must be a whole number in [0, 4294967295], not -1."),
    (["seed=4294967296"], "seed must be a whole number in [0, 4294967295], not 4294967296."),
    (["schedule=step", "schedule.gamma=10"],
     "schedule.gamma must be in (0, 1] (the lr is multiplied by it at each drop), not 10."),
    (["schedule.warmup_epochs=-1"], "schedule.warmup_epochs must be >= 0, not -1.0."),
    (["schedule=onecycle", "schedule.pct_start=1"], "schedule.pct_start must be in [0, 1), not 1."),
    (["schedule=multistep", "schedule.milestones=3"], "schedule.milestones must be a list of epochs, not 3."),
    (["augment=basic", "augment.hflip.p=2"], "augment.hflip.p must be a probability in [0, 1], not 2.0."),
    (["optimizer.lr=0"], "optimizer.lr must be positive, not 0."),
    (["optimizer=sgd", "optimizer.momentum=5"], "optimizer.momentum must be in [0, 1) (0.9 is usual), not 5."),
    (["optimizer.betas=[0.9]"], "optimizer.betas must be two numbers in [0, 1), not [0.9]."),
    (["optimizer.weight_decay=2"],
     "optimizer.weight_decay must be in [0, 1] (5e-4 is usual for sgd, 0.05 for adamw), not 2."),
    (["optimizer.accumulate_steps=0"], "optimizer.accumulate_steps must be a whole number >= 1, not 0."),
    (["optimizer.l1=-1"], "optimizer.l1 must be >= 0, not -1."),
    (["distill.temperature=0"], "distill.temperature must be > 0, not 0.0."),
    (["distill.alpha=1.5"], "distill.alpha must be in [0, 1], not 1.5."),
    (["finetune.freeze=all"], "finetune.freeze must be encoder or none, not 'all'."),
    (["finetune.unfreeze_epoch=2"],
     "finetune.unfreeze_epoch needs finetune.freeze=encoder (there is nothing to unfreeze)."),
    (["finetune.encoder_lr_mult=-1"], "finetune.encoder_lr_mult must be >= 0, not -1.0."),
    (["finetune.l2sp=0.1"], "finetune.freeze=encoder and finetune.l2sp need pretrained weights to start from: "
                            "init=PATH (an imgcls checkpoint), model=tv model.weights=DEFAULT or "
                            "model=timm model.pretrained=true."),
    (["domain.target=nowhere"], "domain.target must be a dataset option (cifar10, cifar100, csv, digits, "
                                "digits_inverted, fashion_mnist, fashion_mnist_mosaic, fashion_mnist_noisy, "
                                "fashion_mnist_rotated, imagefolder, mnist, synthetic), not 'nowhere'."),
    (["domain.target=digits_inverted", "domain.lambda=-1"], "domain.lambda must be >= 0, not -1.0."),
    (["domain.target=digits_inverted", "domain.ramp=1"], "domain.ramp must be true or false, not 1."),
    (["domain.target=digits_inverted", "domain.hidden=0"], "domain.hidden must be a whole number >= 1, not 0."),
    (["label_smoothing=1"], "label_smoothing must be in [0, 1), not 1.0."),
    (["topk=0"], "topk must be a whole number >= 1, not 0."),
    (["tta=flip"], "tta must be one of none, hflip, hflip_shift, not 'flip'."),
    (["bn_recalibrate=sometimes"], "bn_recalibrate must be auto, true or false, not 'sometimes'."),
    (["bn_recalibrate_images=0"], "bn_recalibrate_images must be a whole number >= 1, not 0."),
    (["on_nan=ignore"], "on_nan must be stop or skip_batch, not 'ignore'."),
    (["distributed.backend=mpi"], "distributed.backend must be one of auto, gloo, nccl, not 'mpi'."),
    (["distributed.sync_bn=yes"], "distributed.sync_bn must be true or false, not 'yes'."),
    (["distributed.nproc=0"], "distributed.nproc must be a whole number >= 1, not 0."),
    (["num_workers=-1"], "num_workers must be a whole number >= 0, not -1."),
    (["precision=fp8"], "precision must be one of auto, fp32, bf16, fp16, not 'fp8'."),
    (["channels_last=maybe"], "channels_last must be auto, true or false, not 'maybe'."),
    (["compile=maybe"], "compile must be true or false, not 'maybe'."),
    (["tensorboard=1"], "tensorboard must be true or false, not '1'."),
    (["val_every=0"], "val_every must be a whole number >= 1, not 0."),
    (["checkpoint.every_n_steps=-5"], "checkpoint.every_n_steps must be a whole number >= 0, not -5."),
    (["early_stopping.metric=accuracy"],
     "early_stopping.metric must be one of val_accuracy, val_loss, val_map, not 'accuracy'."),
    (["early_stopping.mode=up"], "early_stopping.mode must be max or min, not 'up'."),
    (["early_stopping.patience=-1"], "early_stopping.patience must be a whole number >= 0, not -1."),
    (["ema.decay=1"], "ema.decay must be in (0, 1) (e.g. 0.999), or null for no EMA; not 1.0."),
    (["dataset.val_fraction=2"], "dataset.val_fraction must be in [0, 1), not 2.0."),
    (["dataset.image_size=3"],
     "dataset.image_size must be a whole number from 8 to 2048 (pixels a side), or auto, not 3."),
]


@pytest.mark.parametrize("overrides,message", REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_a_bad_value_is_its_one_line_error(train_config, datasets, overrides, message):
    with pytest.raises(UserError) as info:
        parsed(train_config, datasets, *overrides)
    assert str(info.value) == message


def test_the_first_mistake_in_the_order_of_the_keys_is_reported(train_config, datasets):
    with pytest.raises(UserError, match="^epochs must"):
        parsed(train_config, datasets, "ema.decay=5", "epochs=0", "seed=-1")
    with pytest.raises(UserError, match="^seed must"):
        parsed(train_config, datasets, "ema.decay=5", "seed=-1")


def test_parsing_reads_no_file(train_config, datasets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # init=, distill.teacher= and resume= name files the engine reads, not the parse
    spec = parsed(train_config, datasets, "init=missing.pt", "distill.teacher=gone.pt", "resume=nowhere")
    assert (spec.init, spec.distill.teacher, spec.resume) == ("missing.pt", "gone.pt", "nowhere")
    assert not list(Path(tmp_path).iterdir())


def test_batch_norm_recalibration_is_active_while_a_run_is_short():
    assert [BNRecalibrateSpec("auto").active(s) for s in (0, 99, 100)] == [True, True, False]
    assert BNRecalibrateSpec(True).active(10**6) and not BNRecalibrateSpec(False).active(0)
