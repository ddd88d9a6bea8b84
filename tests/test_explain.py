"""Explanations (imgcls explain, imgcls eval explain=N): the heat maps point at the evidence, every model declares
its layer, and mistakes are one line.

One small model is trained once on the synthetic `patch` dataset, where a patch at a random place alone gives the
class (its box is known): Grad-CAM's peak must fall inside the patch. The same checkpoint serves the CLI tests.
"""
from __future__ import annotations

import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (assert_ok, assert_user_error, png_shape, read_csv, read_json, run_in_one_process,
                      run_once, write_broken_files, write_png)
from reportkit import page_data
from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.data.patches import PATCH_CLASSES, make_patches, patch_side
from imgcls_cli.data.synthetic import make_synthetic
from imgcls_cli.errors import UserError
from imgcls_cli.explain.core import Explainer
from imgcls_cli.explain.evaluate import COLUMNS as EVAL_COLUMNS, choose_rows
from imgcls_cli.explain.run import COLUMNS, run_explain
from imgcls_cli.models import MODELS, cam_layer, create_model
from imgcls_cli.specs.explain import ExplainSpec

# ~10 s of training on 2 CPU cores: 600 images of 32 px, 5 classes; test accuracy 1.0 with seed 0.
PATCH = ["dataset=synthetic", "dataset.pattern=patch", "dataset.num_samples=600", "batch_size=16",
         "model.widths=[16,32]", "model.hidden=32", "model.drop_rate=0", "optimizer.lr=0.005", "epochs=5"]
MIN_ACCURACY, MIN_HIT_RATE = 0.95, 0.80
# Tiny settings per model (random weights), so that every registered model is explained in a fraction of a second.
TINY_KWARGS = {"simple_cnn": {"widths": [8, 16], "hidden": 16}, "resnet": {"depth": 10, "width": 8},
               "resnet18": {"width": 8}, "resnet34": {"width": 8}, "resnet50": {"width": 8},
               "resnet101": {"width": 8}, "resnet9": {"widths": [8, 8, 8, 8]}, "alexnet": {"hidden": 32},
               "vgg11": {"hidden": 32}, "vgg13": {"hidden": 32}, "vgg16": {"hidden": 32}, "vgg19": {"hidden": 32},
               "densenet121": {"growth_rate": 4}, "densenet_bc_100": {"growth_rate": 4},
               "efficientnet": {"width_mult": 0.25, "depth_mult": 0.25}, "tv": {"arch": "resnet18"}}


@pytest.fixture(scope="session")
def patch_run(tmp_path_factory):
    result = run_once(tmp_path_factory, "explain_patch", "train", *PATCH)
    assert_ok(result)
    return result.run_dir


@pytest.fixture(scope="module")
def test_split(patch_run):
    """The run's test images (uint8), labels and patch boxes, rebuilt from the checkpoint's dataset and seed."""
    ckpt = load_checkpoint(patch_run / "checkpoints" / "best.pt")
    ds, seed = ckpt["config"]["dataset"], ckpt["config"]["seed"]
    test = load_dataset(ds, seed).splits["test"]
    _, _, boxes = make_patches(ds["num_samples"], ds["num_classes"], ds["image_size"], ds["channels"], seed)
    return ckpt, test.images, test.labels.numpy(), boxes[[int(i) for i in test.ids]]


def class_folders(root: Path, images, labels, count: int) -> Path:
    """The first `count` test images as PNG files in class folders (root/<class>/<n>.png)."""
    for n in range(count):
        write_png(root / PATCH_CLASSES[int(labels[n])] / f"{n}.png", images[n].numpy())
    return root


# ------------------------------------------------------------------------------------------- the patch dataset
def test_the_default_synthetic_pattern_is_unchanged_and_patch_boxes_come_back_with_the_seed():
    from imgcls_cli.data.builders import synthetic

    default = synthetic(image_size=16, channels=3, seed=3, num_samples=60, num_classes=5)
    images, labels = make_synthetic(60, 5, 16, 3, 3)
    assert default.images.tobytes() == images.tobytes() and np.array_equal(default.labels, labels)
    first, again = make_patches(60, 5, 32, 3, 7), make_patches(60, 5, 32, 3, 7)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again))
    images, labels, boxes = first
    side = patch_side(32)
    assert (boxes[:, 2] - boxes[:, 0] == side).all() and (boxes[:, 3] - boxes[:, 1] == side).all()
    assert boxes.min() >= 0 and boxes.max() <= 32
    for image, label, (top, left, bottom, right) in zip(images, labels, boxes):
        outside = image.copy()
        outside[:, top:bottom, left:right] = 100
        assert 64 <= outside.min() and outside.max() < 192  # noise only outside the patch
        patch = image[:, top:bottom, left:right]
        assert (patch.max(0) == 0).any() or label == 0  # every shape but solid has black pixels
    same = [images[i][:, b[0]:b[2], b[1]:b[3]] for i, b in enumerate(boxes) if labels[i] == labels[0]]
    assert np.abs(same[0].astype(int) - same[1].astype(int)).max() < 40  # the class is the patch (brightness aside)


# ------------------------------------------------------------------------------------------- the evidence
def hit_rate(ckpt, images, labels, boxes, method: str) -> tuple[float, int, float]:
    """(share of correctly classified images whose heat map peaks inside the patch, their number, accuracy)."""
    result = Explainer(ckpt, method, torch.device("cpu"))(images)
    correct = result.probs.argmax(1) == labels
    size = result.heat.shape[-1]
    peak = result.heat.reshape(len(images), -1).argmax(1)
    y, x = peak // size, peak % size
    inside = (y >= boxes[:, 0]) & (y < boxes[:, 2]) & (x >= boxes[:, 1]) & (x < boxes[:, 3])
    return float(inside[correct].mean()), int(correct.sum()), float(correct.mean())


# method -> test images explained: occlusion costs 64 forward passes an image, so it is checked on the first 40.
EVIDENCE = {"gradcam": None, "guided_gradcam": None, "occlusion": 40}


@pytest.mark.parametrize("method", list(EVIDENCE))
def test_the_heat_map_peaks_inside_the_patch_that_gives_the_class(test_split, method):
    ckpt, images, labels, boxes = test_split
    n = EVIDENCE[method] or len(labels)
    start = time.perf_counter()
    rate, n, accuracy = hit_rate(ckpt, images[:n], labels[:n], boxes[:n], method)
    print(f"\n{method}: peak inside the patch on {rate:.3f} of {n} correctly classified test images "
          f"(test accuracy {accuracy:.3f}, {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    assert accuracy >= MIN_ACCURACY
    assert rate >= MIN_HIT_RATE  # a peak anywhere would land in the patch on 1/16 of the images


# ------------------------------------------------------------------------------------------- imgcls explain
@pytest.fixture(scope="module")
def inputs(tmp_path_factory, test_split):
    """Six test images in class folders, and two files that do not decode (in a class folder too)."""
    _, images, labels, _ = test_split
    root = class_folders(tmp_path_factory.mktemp("explain_inputs") / "images", images, labels, 6)
    write_broken_files(root / PATCH_CLASSES[0])
    return root


@pytest.fixture(scope="module")
def swapped_checkpoint(patch_run, tmp_path_factory):
    """best.pt with the classifier rows of classes 1 and 2 swapped: each image of one of them is a confident
    error, the others stay right."""
    ckpt = torch.load(patch_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    head = [k for k, v in state.items() if k.endswith(".weight") and v.ndim == 2][-1].rsplit(".", 1)[0]
    for key in (f"{head}.weight", f"{head}.bias"):
        state[key][[1, 2]] = state[key][[2, 1]].clone()
    path = tmp_path_factory.mktemp("swapped") / "swapped.pt"
    save_checkpoint({k: v for k, v in ckpt.items() if k not in ("format", "format_version")}, path)
    return path


@pytest.fixture(scope="module")
def runs(patch_run, inputs, swapped_checkpoint, test_split, tmp_path_factory):
    """The CLI calls of this file, each as a user types it, in one child process (conftest.run_in_one_process)."""
    work = tmp_path_factory.mktemp("explain_cli")
    best = patch_run / "checkpoints" / "best.pt"
    (work / "model.onnx").write_bytes(b"exported")
    write_png(work / "flat" / "a.png", np.full((3, 32, 32), 128, np.uint8))
    _, images, labels, _ = test_split
    for k in range(len(PATCH_CLASSES[:5])):  # an image folder of every class: a dataset that streams from files
        for n in np.flatnonzero(labels == k)[:2]:
            write_png(work / "folder" / PATCH_CLASSES[k] / f"{n}.png", images[n].numpy())
    calls = {
        "explain": ["explain", f"checkpoint={best}", f"inputs={inputs}", "target=true"],
        "eval": ["eval", f"checkpoint={swapped_checkpoint}", "explain=3"],
        # num_workers=0: no decode worker processes (forked from this child, which runs the other calls too)
        "eval streamed": ["eval", f"checkpoint={best}", "dataset=imagefolder", f"dataset.root={work / 'folder'}",
                          "+dataset.in_memory=false", "dataset.val_fraction=0", "dataset.test_fraction=0.5",
                          "num_workers=0", "explain=1"],
        "first": ["explain", f"checkpoint={best}", f"inputs={work / 'flat'}", f"hydra.run.dir={work / 'fixed'}"],
        "again": ["explain", f"checkpoint={best}", f"inputs={work / 'flat'}", f"hydra.run.dir={work / 'fixed'}"],
        "class": ["explain", f"checkpoint={best}", f"inputs={inputs}", "target=chekcer"],
        "no class folder": ["explain", f"checkpoint={best}", f"inputs={work / 'flat'}", "target=true"],
        "exported": ["explain", "checkpoint=model.onnx", f"inputs={inputs}"],
        "method": ["explain", f"checkpoint={best}", f"inputs={inputs}", "method=gradkam"],
        "no inputs": ["explain", f"checkpoint={best}"],
        "ensemble": ["eval", f"checkpoint=[{best},{best}]", "explain=2"],
        "eval exported": ["eval", "checkpoint=model.onnx", "explain=2"],
        "eval method": ["eval", f"checkpoint={best}", "explain=2", "explain_method=ocllusion"],
    }
    return run_in_one_process({name: (argv, work) for name, argv in calls.items()})


def test_explain_writes_an_overlay_per_image_a_mosaic_and_a_row_per_input(runs, inputs):
    result = runs["explain"]
    assert_ok(result)
    run_dir = result.run_dir
    assert run_dir.parent == result.cwd / "outputs" / "explain"
    with open(run_dir / "explanations.csv", newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == COLUMNS
    rows = {Path(r["path"]).relative_to(inputs).as_posix(): r for r in read_csv(run_dir / "explanations.csv")}
    assert len(rows) == 8
    broken = {name: row for name, row in rows.items() if row["error"]}
    assert set(broken) == {f"{PATCH_CLASSES[0]}/broken.png", f"{PATCH_CLASSES[0]}/empty.jpg"}
    assert all(not row["overlay"] and not row["label"] for row in broken.values())
    overlays = set()
    for name, row in rows.items():
        if row["error"]:
            continue
        assert row["explained"] == name.split("/")[0]  # target=true: the class folder
        assert row["label"] == row["explained"]  # the model is right on these
        probabilities = [float(row[k]) for k in ("probability", "top2_probability", "top3_probability")]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < probabilities[0] <= 1
        picture = png_shape(run_dir / row["overlay"])
        assert picture[2] == 3 and picture[1] > 2 * 160  # the image and its heat map side by side, at 160 px
        overlays.add(row["overlay"])
    assert len(overlays) == 6 and {p.name for p in (run_dir / "overlays").iterdir()} == {Path(o).name for o in overlays}
    assert png_shape(run_dir / "mosaic.png")[1] > png_shape(run_dir / next(iter(overlays)))[1]
    assert "6 images explained with gradcam, 2 failed" in result.stdout + result.stderr


def test_eval_explain_writes_the_most_confident_errors_and_random_correct_images(runs):
    result = runs["eval"]
    assert_ok(result)
    run_dir = result.run_dir
    with open(run_dir / "explain" / "explanations.csv", newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == EVAL_COLUMNS == ["key", "kind", "target", "label", "probability", "overlay"]
    rows = read_csv(run_dir / "explain" / "explanations.csv")
    predictions = {r["index"]: r for r in read_csv(run_dir / "predictions.csv")}
    assert [r["kind"] for r in rows] == ["error"] * 3 + ["correct"] * 3
    wrong = sorted((float(r["probability"]) for r in predictions.values() if r["label"] != r["target"]), reverse=True)
    assert [float(r["probability"]) for r in rows[:3]] == wrong[:3]  # the most confident errors, in order
    for row in rows:
        shown = predictions[row["key"]]  # key: the first column of predictions.csv
        assert (row["target"], row["label"], row["probability"]) == (shown["target"], shown["label"],
                                                                      shown["probability"])
        assert (row["label"] == row["target"]) == (row["kind"] == "correct")
        assert png_shape(run_dir / "explain" / row["overlay"])[2] == 3
    assert {r["target"] for r in rows[:3]} <= {PATCH_CLASSES[1], PATCH_CLASSES[2]}
    assert png_shape(run_dir / "explain" / "mosaic.png")[2] == 3
    # the eval run's report.html carries every overlay inline, with its image's key
    shown = page_data((run_dir / "report.html").read_text(encoding="utf-8"))["explanations"]
    assert sorted(e["key"] for e in shown) == sorted(r["key"] for r in rows) and all(e["src"] for e in shown)


def test_eval_explain_reads_the_images_of_a_dataset_that_streams_from_files(runs):
    result = runs["eval streamed"]
    assert_ok(result)
    rows = read_csv(result.run_dir / "explain" / "explanations.csv")
    predictions = {r["path"]: r for r in read_csv(result.run_dir / "predictions.csv")}
    assert [r["kind"] for r in rows] == ["correct"]  # the model makes no error here
    assert rows[0]["key"] in predictions and rows[0]["key"].split("/")[0] == rows[0]["target"]
    assert png_shape(result.run_dir / "explain" / rows[0]["overlay"])[2] == 3


def test_the_correct_images_are_drawn_with_the_seed_and_the_errors_ranked_by_confidence():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 200)
    targets = rng.integers(0, 4, 200)
    chosen = choose_rows(probs, targets, 5, seed=1)
    assert chosen == choose_rows(probs, targets, 5, seed=1) != choose_rows(probs, targets, 5, seed=2)
    errors, correct = [r for r, k in chosen if k == "error"], [r for r, k in chosen if k == "correct"]
    assert len(errors) == len(correct) == 5 and correct == sorted(correct)
    assert all(probs[r].argmax() == targets[r] for r in correct)
    assert all(probs[r].argmax() != targets[r] for r in errors)
    confidence = [probs[r].max() for r in errors]
    assert confidence == sorted(confidence, reverse=True)
    assert confidence[0] == max(p.max() for p, t in zip(probs, targets) if p.argmax() != t)


# ------------------------------------------------------------------------------------------- mistakes
def test_mistakes_are_one_line(runs):
    results = runs
    assert_user_error(results["class"], "target='chekcer' is not a class", "Did you mean checker?")
    assert_user_error(results["no class folder"], "target=true", "'flat', which is not a class")
    assert_user_error(results["exported"], "model.onnx", "the .pt checkpoint")
    assert_user_error(results["method"], "unknown explanation method 'gradkam'", "Did you mean gradcam",
                      "Choices: gradcam, guided_gradcam, occlusion.")
    assert_user_error(results["no inputs"], "inputs= is required")
    assert_user_error(results["ensemble"], "explain=2", "2 files")
    assert_user_error(results["eval exported"], "model.onnx", "the .pt checkpoint")
    assert_user_error(results["eval method"], "'ocllusion'", "Did you mean occlusion?")
    assert_ok(results["first"])  # a finished explain run is never overwritten unless asked
    assert_user_error(results["again"], "explanations.csv", "overwrite=true")


# ------------------------------------------------------------------------------------------- every model
@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_images")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_png(root / f"{i}.png", rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    return root


def tiny_checkpoint(path: Path, name: str, kwargs: dict) -> Path:
    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "in_channels": 3, "image_size": 32, **kwargs}
    model = create_model(name, **kwargs)
    save_checkpoint({"model": {"name": name, "kwargs": kwargs}, "state_dict": model.state_dict(),
                     "classes": ["a", "b", "c"], "input": {"channels": 3, "size": 32, "mean": [0.5] * 3,
                                                           "std": [0.25] * 3}, "config": {"seed": 0}}, path)
    return path


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_is_explained_at_its_declared_layer(name):
    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "in_channels": 3, "image_size": 32, **TINY_KWARGS.get(name, {})}
    model = create_model(name, **kwargs)
    ckpt = {"model": {"name": name, "kwargs": kwargs}, "state_dict": model.state_dict(), "classes": ["a", "b", "c"],
            "input": {"channels": 3, "size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}, "config": {}}
    explainer = Explainer(ckpt, "gradcam", torch.device("cpu"))
    assert explainer.layer[0] == cam_layer(name, kwargs)
    result = explainer(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8))
    assert result.probs.shape == (1, 3) and result.heat.shape == (1, 32, 32)
    assert np.isfinite(result.heat).all() and 0 <= result.heat.min() and result.heat.max() <= 1


def mlp(*, num_classes: int, in_channels: int = 3, image_size: int = 32, hidden: int = 16) -> torch.nn.Module:
    """A model without convolutions (no spatial feature map)."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size ** 2, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))


def test_a_model_without_a_spatial_layer_is_one_line_and_occlusion_still_explains_it(monkeypatch, two_images,
                                                                                     tmp_path):
    monkeypatch.setitem(MODELS._entries, "mlp", mlp)
    checkpoint = tiny_checkpoint(tmp_path / "mlp.pt", "mlp", {})
    with pytest.raises(UserError, match=r"^model 'mlp' has no spatial feature map to explain with method=gradcam"):
        run_explain(ExplainSpec(str(checkpoint), str(two_images)), tmp_path / "gradcam")
    assert run_explain(ExplainSpec(str(checkpoint), str(two_images), method="occlusion"),
                       tmp_path / "occlusion")["explained"] == 2
    monkeypatch.setattr(mlp, "cam_layer", "1", raising=False)  # a layer that is declared but gives (N, D)
    with pytest.raises(UserError, match=r"its layer '1' gives outputs of shape \[2, 16\], not a spatial map"):
        run_explain(ExplainSpec(str(checkpoint), str(two_images)), tmp_path / "declared")


def test_without_captum_explain_names_the_extra(monkeypatch, two_images, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "m.pt", "simple_cnn", TINY_KWARGS["simple_cnn"])
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(UserError, match=r"pip install 'imgcls\[explain\]'"):
        run_explain(ExplainSpec(str(checkpoint), str(two_images)), tmp_path / "run")


# ------------------------------------------------------------------------------------------- torchvision's families
def test_each_torchvision_family_in_the_table_names_a_spatial_map_and_others_are_one_line():
    import torchvision

    from imgcls_cli.models.torchvision_models import CAM_LAYERS

    arches = torchvision.models.list_models(module=torchvision.models)
    for family, layer in CAM_LAYERS.items():
        arch = min((a for a in arches if a.startswith(family)), key=len)  # the family's shortest name
        assert cam_layer("tv", {"arch": arch}) == layer
        device = "cpu" if family == "regnet" else "meta"  # meta: nothing allocated; regnet's builder reads values
        with torch.device(device), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # googlenet's and inception's note on their init
            model = torchvision.models.get_model("regnet_x_400mf" if family == "regnet" else arch, num_classes=3)
        shapes = []
        model.eval().get_submodule(layer).register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape)))
        size = 224 if device == "meta" else 64  # a real forward pass is kept small
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
        assert len(shapes) == 1 and len(shapes[0]) == 4 and shapes[0][2] >= 2, (arch, shapes)
    with pytest.raises(UserError, match="model.arch=vit_b_16: imgcls does not know which layer.*method=occlusion"):
        cam_layer("tv", {"arch": "vit_b_16"})
