"""`model=timm`: any timm architecture trains on digits and is evaluated, predicted, exported and explained from its
checkpoint alone; the mistakes (unknown arch, timm missing, weights offline) are one line. Nothing is downloaded."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm")

import imgcls_cli.models.timm_models as tm  # noqa: E402
from conftest import assert_ok, assert_user_error, read_csv, read_json, run_cli, run_in_one_process  # noqa: E402
from imgcls_cli.checkpoint import load_checkpoint  # noqa: E402
from imgcls_cli.engine.inference import model_from_checkpoint  # noqa: E402
from imgcls_cli.errors import UserError  # noqa: E402
from imgcls_cli.models import cam_layer, create_model  # noqa: E402

ARCHES = ["resnet10t", "mobilenetv3_small_050", "convnext_atto", "efficientvit_m0"]
TINY = ["dataset=digits", "epochs=1", "batch_size=16", "dataset.max_train_samples=32", "dataset.max_eval_samples=32",
        "bn_recalibrate=false"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict[str, Path]:
    """One epoch of each architecture on digits (one sweep): {arch: run dir}."""
    base = tmp_path_factory.mktemp("timm")
    result = run_cli("train", "-m", "model=timm", f"model.arch={','.join(ARCHES)}", *TINY,
                     f"hydra.sweep.dir={base / 'sweep'}", cwd=base, timeout=900)
    assert_ok(result)
    rows = read_csv(base / "sweep" / "summary.csv")
    assert [r["status"] for r in rows] == ["completed"] * len(ARCHES), rows
    dirs = {int(p.name.split("_", 1)[0]): p for p in (base / "sweep").iterdir() if (p / "checkpoints").is_dir()}
    return {arch: dirs[job] for job, arch in enumerate(ARCHES)}  # job N trains the Nth arch


@pytest.fixture(scope="module")
def after(sweep, tmp_path_factory) -> dict:
    """eval and predict of every run's best.pt, export and explain of one, in one process."""
    base = tmp_path_factory.mktemp("timm_after")
    images = sweep[ARCHES[0]] / "eval" / "confusion_matrix.png"  # any image file will do for predict
    calls = {}
    for arch, run in sweep.items():
        best = run / "checkpoints" / "best.pt"
        calls[f"eval-{arch}"] = (["eval", f"checkpoint={best}"], base)
        calls[f"predict-{arch}"] = (["predict", f"checkpoint={best}", f"inputs={images}"], base)
    best = sweep["convnext_atto"] / "checkpoints" / "best.pt"
    calls["export"] = (["export", f"checkpoint={best}", "format=torch_export"], base)
    calls["explain"] = (["explain", f"checkpoint={best}", f"inputs={images}"], base)
    return run_in_one_process(calls, timeout=900)


@pytest.mark.parametrize("arch", ARCHES)
def test_each_arch_trains_one_epoch_at_the_datasets_shape_and_is_evaluated_and_predicted(sweep, after, arch):
    run = sweep[arch]
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["test_accuracy"] is not None
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ckpt["model"]["name"] == "timm" and ckpt["model"]["kwargs"]["arch"] == arch
    assert ckpt["model"]["kwargs"]["in_channels"] == 1 and len(ckpt["classes"]) == 10
    evaluated, predicted = after[f"eval-{arch}"], after[f"predict-{arch}"]
    assert_ok(evaluated)
    assert_ok(predicted)
    metrics = read_json(evaluated.run_dir / "metrics.json")
    assert metrics["accuracy"] == pytest.approx(read_json(run / "eval" / "metrics.json")["accuracy"])
    rows = read_csv(predicted.run_dir / "predictions.csv")
    assert len(rows) == 1 and rows[0]["label"] in ckpt["classes"] and not rows[0]["error"]


def test_a_timm_checkpoint_is_exported_and_explained(after):
    assert_ok(after["export"])
    assert any(p.suffix == ".pt2" for p in after["export"].run_dir.iterdir())
    assert_ok(after["explain"])
    assert any(p.suffix == ".png" for p in after["explain"].run_dir.rglob("*"))


def test_a_pretrained_checkpoint_is_rebuilt_without_fetching_weights(sweep, monkeypatch):
    """pretrained=true in the checkpoint: eval/predict build the architecture alone (a fetch here would fail)."""
    ckpt = load_checkpoint(sweep["resnet10t"] / "checkpoints" / "best.pt")
    ckpt["model"]["kwargs"]["pretrained"] = True
    monkeypatch.setattr(tm, "_with_weights", lambda *a, **k: pytest.fail("weights fetched"))
    model = model_from_checkpoint(ckpt, torch.device("cpu"))
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_unknown_arch_is_one_line_with_timms_close_names_exit_2(tmp_path):
    result = run_cli("train", "model=timm", "model.arch=convnext_atom", *TINY, cwd=tmp_path)
    assert_user_error(result, "convnext_atom", "convnext_atto", "timm")


def test_pretrained_offline_is_one_line_at_once(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    start = time.perf_counter()
    with pytest.raises(UserError) as info:
        create_model("timm", num_classes=10, in_channels=3, image_size=32, arch="resnet10t", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and "could not be fetched" in message and "model.pretrained=false" in message
    assert time.perf_counter() - start < 2 * tm.PROBE_SECONDS + 5


def test_pretrained_weights_bring_their_input_size_and_normalization():
    from imgcls_cli.models import input_size, normalization

    assert input_size("timm", {"arch": "resnet10t", "pretrained": True}) == 176  # timm's c3_in1k weights
    assert input_size("timm", {"arch": "resnet10t"}) is None
    assert normalization("timm", {"arch": "vit_tiny_patch16_224", "pretrained": True}) == ([0.5] * 3, [0.5] * 3)


def test_without_timm_model_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails as where it is not installed
    tm.arches.cache_clear()
    try:
        with pytest.raises(UserError, match=r"pip install 'imgcls\[timm\]'"):
            create_model("timm", num_classes=10, arch="resnet10t")
        assert "imgcls[timm]" in tm.arch_note()
    finally:
        tm.arches.cache_clear()


def test_transformers_have_no_gradcam_layer_but_cnns_do():
    assert cam_layer("timm", {"arch": "resnet10t", "image_size": 32}) == "layer4"
    with pytest.raises(UserError, match="method=occlusion"):
        cam_layer("timm", {"arch": "vit_tiny_patch16_224", "image_size": 32})


def test_timm_settings_pass_through_and_unknown_ones_are_one_line():
    model = create_model("timm", num_classes=10, in_channels=3, image_size=32, arch="resnet10t", drop_rate=0.5)
    assert model.drop_rate == 0.5
    with pytest.raises(UserError, match=r"resnet10t takes no model\.widths"):
        create_model("timm", num_classes=10, in_channels=3, image_size=32, arch="resnet10t", widths=[8])


def test_list_models_counts_the_timm_architectures(monkeypatch, capsys):
    from imgcls_cli import listing

    few = [p for p in listing.model_presets() if p.name == "timm"]
    monkeypatch.setattr(listing, "model_presets", lambda: few)  # the other models cost time: tested elsewhere
    assert listing.list_command(["models", "--markdown"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| timm "))
    assert f"any of {len(tm.arches())} timm models: model.arch=NAME" in row and len(tm.arches()) > 1000
