"""Every model option trains end to end through the CLI, on digits and on a Fashion-MNIST subset.

One `imgcls train -m model=<every option>` sweep per dataset, with only the quick-run settings (one epoch,
a few images): no model needs to be told the dataset's channels, classes or size.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_ok, read_csv, read_json, run_cli
from imgcls_cli.models import input_size
from imgcls_cli.paths import CONF_DIR

MODEL_OPTIONS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
QUICK = ["epochs=1", "batch_size=8", "dataset.max_train_samples=8", "dataset.max_eval_samples=4"]
DATASETS = {"digits": (32, 10), "fashion_mnist": (28, 10)}  # option: (image size, classes)


@pytest.fixture(scope="module")
def zoo_sweeps(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("zoo")
    for name in DATASETS:  # one after the other: two at once on two cores take longer than in turn
        assert_ok(run_cli("train", "-m", f"model={','.join(MODEL_OPTIONS)}", f"dataset={name}", *QUICK,
                          f"hydra.sweep.dir={base / name}", cwd=base))
    return {name: base / name for name in DATASETS}


def test_the_registry_has_every_architecture_of_the_toolbox():
    for option in ("simple_cnn", "lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet", "resnet18",
                   "resnet34", "resnet50", "resnet101", "densenet121", "densenet_bc_100", "efficientnet",
                   "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "tv"):
        assert option in MODEL_OPTIONS


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_model_trains_with_no_model_setting(zoo_sweeps, dataset):
    sweep = zoo_sweeps[dataset]
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == len(MODEL_OPTIONS)
    assert [r["status"] for r in rows] == ["completed"] * len(rows), rows
    size, num_classes = DATASETS[dataset]
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        option = job.name.rsplit("model-", 1)[1]
        summary = read_json(job / "summary.json")
        assert summary["status"] == "completed" and 0.0 <= summary["test_accuracy"] <= 1.0, job.name
        ckpt = torch.load(job / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
        kwargs = ckpt["model"]["kwargs"]
        assert (kwargs["in_channels"], kwargs["num_classes"]) == (1, num_classes), option
        # The dataset's size, or the model's own resolution (EfficientNet's compound scaling) when it has one.
        assert ckpt["input"]["size"] == (input_size(ckpt["model"]["name"], kwargs) or size), option
        assert len(read_csv(job / "eval" / "predictions.csv")) == 4
