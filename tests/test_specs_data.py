"""DatasetSpec, ModelSpec and AugmentSpec: the dataset, model and augment groups checked once at the command edge,
with the one-line errors loading, building and augmenting gave, and without importing torch."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from imgcls_cli.data.augment import build_augment
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.errors import UserError
from imgcls_cli.models import create_model, input_size
from imgcls_cli.specs.augment import AugmentSpec
from imgcls_cli.specs.dataset import DatasetSpec
from imgcls_cli.specs.model import ModelSpec

CONF = Path(__file__).resolve().parents[1] / "conf"
DIGITS = {"name": "digits", "image_size": 16, "channels": 1, "val_fraction": 0.15, "test_fraction": 0.2,
          "max_train_samples": 60, "max_eval_samples": 30}


def option(group: str, name: str) -> dict:
    return yaml.safe_load((CONF / group / f"{name}.yaml").read_text())


def test_the_specs_import_no_torch():
    """They run at the command edge, before anything heavy is imported."""
    code = ("import sys; import imgcls_cli.specs.dataset, imgcls_cli.specs.model, imgcls_cli.specs.augment; "
            "print(sorted(m for m in ('torch', 'numpy', 'hydra', 'omegaconf', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "dataset").glob("*.yaml")))
def test_every_dataset_option_parses(name):
    spec = DatasetSpec.from_config(option("dataset", name))
    assert spec.name == name
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.image_size = 8  # type: ignore[misc]


@pytest.mark.parametrize("group", ["model", "augment"])
def test_every_model_and_augment_option_parses(group):
    parse = ModelSpec.from_config if group == "model" else AugmentSpec.from_config
    for path in sorted((CONF / group).glob("*.yaml")):
        parse(yaml.safe_load(path.read_text()))


def test_a_spec_loads_the_same_dataset_as_its_plain_config():
    spec = DatasetSpec.from_config(DIGITS)
    a, b = load_dataset(spec, seed=1), load_dataset(DIGITS, seed=1)
    assert (a.mean, a.std, a.classes) == (b.mean, b.std, b.classes)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].images, b.splits[split].images)
        assert a.splits[split].ids == b.splits[split].ids


def test_a_replaced_image_size_loads_at_that_size():
    bundle = load_dataset(dataclasses.replace(DatasetSpec.from_config(DIGITS), image_size=24), seed=0)
    assert bundle.splits["train"].images.shape[-2:] == (24, 24)


@pytest.mark.parametrize("override,message", [
    ({"image_size": 4}, "dataset.image_size must be a whole number from 8 to 2048 (pixels a side), or auto, not 4."),
    ({"channels": 2}, "dataset.channels must be 1 or 3 (or auto), not 2."),
    ({"val_fraction": 1}, "dataset.val_fraction must be in [0, 1), not 1.0."),
    ({"test_fraction": "x"}, "dataset.test_fraction must be a number, not 'x'."),
    ({"max_train_samples": 0}, "dataset.max_train_samples must be a whole number >= 1, not 0."),
    ({"folds": 3, "fold": 3}, "dataset.fold must be in 0..2 for dataset.folds=3, not 3."),
    ({"mean": 0.5}, "give both dataset.mean and dataset.std, or neither (then they are computed on train)."),
    ({"in_memory": "sometimes"}, "dataset.in_memory must be auto, true or false, not 'sometimes'."),
    ({"memory_budget_gb": 0}, "dataset.memory_budget_gb must be > 0, not 0.0."),
    ({"cache": "yes"}, "dataset.cache must be true or false, not 'yes'."),
    ({"sampler": "uniform"}, "dataset.sampler must be null or balanced, not 'uniform'."),
    ({"on_bad_file": "ignore"}, "dataset.on_bad_file must be skip or error, not 'ignore'."),
    ({"angle": float("inf")}, "dataset.angle must be a finite number of degrees, not inf."),
    ({"noise_std": -1}, "dataset.noise_std must be a number >= 0 (a fraction of 255), not -1."),
])
def test_dataset_mistakes_are_one_line_before_any_image_is_read(override, message):
    with pytest.raises(UserError) as caught:
        DatasetSpec.from_config({**DIGITS, **override})
    assert str(caught.value) == message


def test_statistics_are_checked_against_the_channels_found():
    spec = DatasetSpec.from_config({**DIGITS, "mean": [0.5, 0.5], "std": 0.2})
    assert spec.stats(2) == ([0.5, 0.5], [0.2, 0.2])
    with pytest.raises(UserError, match=r"^dataset.mean must be 1 number\(s\), not \[0.5, 0.5\].$"):
        spec.stats(1)


def test_builder_keys_reach_only_the_builders_given_them():
    assert DatasetSpec.from_config(DIGITS).builder_options() == {}
    synthetic = DatasetSpec.from_config(option("dataset", "synthetic"))
    assert synthetic.builder_options() == {"num_samples": 2000, "num_classes": 5, "pattern": "textures"}


def test_a_model_spec_builds_the_model_its_plain_form_builds():
    spec = ModelSpec.from_config({"name": "simple_cnn", "widths": [8, 16], "hidden": 16}).with_input(3, 1, 16)
    torch.manual_seed(0)
    built = create_model(spec)
    torch.manual_seed(0)
    plain = create_model("simple_cnn", widths=[8, 16], hidden=16, num_classes=3, in_channels=1, image_size=16)
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), plain.state_dict().values()))
    assert input_size(spec) is None
    with pytest.raises(TypeError):
        create_model(spec, num_classes=4)


@pytest.mark.parametrize("cfg,message", [
    ({"name": "simple_cnn", "drop_rate": 1}, "model.drop_rate must be a probability in [0, 1), not 1."),
    ({"name": "resnet", "width": 0}, "model.width must be a whole number in [1, 65536], not 0."),
    ({"name": "vgg", "batch_norm": "false"}, "model.batch_norm must be true or false, not 'false'."),
])
def test_model_mistakes_are_one_line_at_parse(cfg, message):
    with pytest.raises(UserError) as caught:
        ModelSpec.from_config(cfg)
    assert str(caught.value) == message


def test_with_input_checks_what_the_dataset_brings():
    with pytest.raises(UserError, match="model.num_classes must be a whole number in"):
        ModelSpec.from_config({"name": "simple_cnn"}).with_input(0, 1, 16)


def test_augment_spec_keeps_config_order_and_splits_off_the_mixing():
    spec = AugmentSpec.from_config({"name": "x", "cutmix": {"alpha": 1.0}, "hflip": 0.3, "rotation": None,
                                    "mix_prob": 0.8})
    assert [(op.name, dict(op.params)) for op in spec.ops] == [("hflip", {"p": 0.3}),
                                                               ("rotation", {"p": 0.5, "degrees": 10.0})]
    assert spec.mix_params == {"mixup_alpha": 0.0, "cutmix_alpha": 1.0, "mix_prob": 0.8, "switch_prob": 0.5}
    assert spec.mixes and build_augment(spec).mixer(3) is not None


@pytest.mark.parametrize("cfg,message", [
    ({"rotation": {"p": 2}}, "augment.rotation.p must be a probability in [0, 1], not 2.0."),
    ({"rotation": {"deg": 5}}, "augment.rotation: rotation() got an unexpected keyword argument 'deg'"),
    ({"mix_prop": 0.5}, "unknown augment key 'mix_prop'. Did you mean mix_prob?"),
    ({"randaugment": {"magnitude": 31}},
     "augment.randaugment.magnitude must be a whole number in [0, 30] (below num_magnitude_bins), not 31."),
    ({"mixup": {"alpha": -1}}, "augment.mixup.alpha must be >= 0 (0 turns mixup off), not -1.0."),
])
def test_augment_mistakes_are_one_line_at_parse(cfg, message):
    with pytest.raises(UserError) as caught:
        AugmentSpec.from_config(cfg)
    assert str(caught.value) == message


def test_an_unknown_op_lists_the_choices():
    with pytest.raises(UserError, match=r"^unknown augmentation op 'hflp'. Did you mean hflip.*Choices: .*vflip\.$"):
        AugmentSpec.from_config({"hflp": 0.5})
