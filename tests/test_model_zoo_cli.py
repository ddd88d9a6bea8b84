"""Every model option trains end to end through the CLI (digits, 32 px), and takes 28 px images too (Fashion-MNIST's
size) with no model setting: no model needs to be told the dataset's channels, classes or size.

One `imgcls train -m model=<every option>` sweep with only the quick-run settings (one epoch, one step of a few
images). At 28 px, a model whose layers are the ones it has at 32 px (the same parameter shapes) takes a training
step in this process; one whose layers depend on the size trains through the CLI again, on synthetic gray 28 px
images (the real Fashion-MNIST files are read in test_datasets_cli.py). A model with its own input resolution
(EfficientNet's compound scaling) resizes any dataset to that: its 32 px run is its 28 px run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from conftest import RUN_TIMEOUT, assert_ok, read_csv, read_json, run_cli
from imgcls_cli.models import create_model, input_size
from imgcls_cli.paths import CONF_DIR

MODEL_OPTIONS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
QUICK = ["epochs=1", "batch_size=4", "dataset.max_train_samples=4", "dataset.max_eval_samples=4"]
# option: (settings, image size, classes)
DATASETS = {
    "digits": (["dataset=digits"], 32, 10),
    "gray28": (["dataset=synthetic", "dataset.image_size=28", "dataset.channels=1", "dataset.num_samples=100"], 28, 5),
}


def model_config(option: str) -> tuple[str, dict[str, Any]]:
    """The builder's name and keyword arguments of a model option, as conf/model/<option>.yaml sets them."""
    config = yaml.safe_load((CONF_DIR / "model" / f"{option}.yaml").read_text())
    return config.pop("name"), config


def build(option: str, size: int, classes: int = 5) -> nn.Module:
    """The model a training run builds for 1-channel images of this size (engine/build.py's keyword arguments)."""
    name, kwargs = model_config(option)
    return create_model(name, **{**kwargs, "num_classes": classes, "in_channels": 1, "image_size": size})


def parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


OWN_SIZE = {option for option in MODEL_OPTIONS if input_size(*model_config(option))}


@pytest.fixture(scope="module")
def layers_depend_on_size() -> set[str]:
    """The options (without a resolution of their own) whose parameters differ at 28 and 32 px: built on the meta
    device, no memory, no arithmetic."""
    with torch.device("meta"):
        return {option for option in set(MODEL_OPTIONS) - OWN_SIZE
                if parameter_shapes(build(option, 28)) != parameter_shapes(build(option, 32))}


@pytest.fixture(scope="module")
def zoo_sweeps(tmp_path_factory, layers_depend_on_size) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("zoo")
    swept = {"digits": MODEL_OPTIONS, "gray28": sorted(layers_depend_on_size)}
    for name, (settings, _, _) in DATASETS.items():  # one after the other: two at once on two cores take longer
        assert_ok(run_cli("train", "-m", f"model={','.join(swept[name])}", *settings, *QUICK,
                          f"hydra.sweep.dir={base / name}", cwd=base, timeout=3 * RUN_TIMEOUT))
    return {name: (base / name, swept[name]) for name in DATASETS}


def test_the_registry_has_every_architecture_of_the_toolbox():
    for option in ("simple_cnn", "lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet", "resnet18",
                   "resnet34", "resnet50", "resnet101", "densenet121", "densenet_bc_100", "efficientnet",
                   "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "tv"):
        assert option in MODEL_OPTIONS


def test_only_efficientnet_has_its_own_input_size():
    assert OWN_SIZE == {option for option in MODEL_OPTIONS if option.startswith("efficientnet")}
    assert min(input_size(*model_config(option)) for option in OWN_SIZE) > 32


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_model_trains_with_no_model_setting(zoo_sweeps, dataset):
    sweep, swept = zoo_sweeps[dataset]
    assert dataset == "digits" or "simple_cnn" in swept  # its flattened features' size is the image's
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == len(swept)
    assert [r["status"] for r in rows] == ["completed"] * len(rows), rows
    _, size, num_classes = DATASETS[dataset]
    trained = []
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        option = job.name.rsplit("model-", 1)[1]
        trained.append(option)
        summary = read_json(job / "summary.json")
        assert summary["status"] == "completed" and 0.0 <= summary["test_accuracy"] <= 1.0, job.name
        ckpt = torch.load(job / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
        assert ckpt["step"] == 1, option  # one optimizer step
        kwargs = ckpt["model"]["kwargs"]
        assert (kwargs["in_channels"], kwargs["num_classes"]) == (1, num_classes), option
        # The dataset's size, or the model's own resolution (EfficientNet's compound scaling) when it has one.
        assert ckpt["input"]["size"] == (input_size(ckpt["model"]["name"], kwargs) or size), option
        assert len(read_csv(job / "eval" / "predictions.csv")) == 4
    assert sorted(trained) == sorted(swept)


def test_every_other_model_takes_a_training_step_on_28_px_images(layers_depend_on_size):
    """The same layers as at 32 px (trained through the CLI above), now on 28 px maps: a step in train mode."""
    for option in sorted(set(MODEL_OPTIONS) - OWN_SIZE - layers_depend_on_size):
        torch.manual_seed(0)
        model = build(option, 28).train()
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        logits = model(torch.randn(2, 1, 28, 28))
        assert logits.shape == (2, 5), option
        loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
        assert torch.isfinite(loss), option
        loss.backward()
        optimizer.step()
        changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
        assert changed > len(before) // 2, option  # the step reached the layers, not only the head
