"""task=multilabel end to end, as a user runs it: a CSV of real images (2x2 mosaics of scikit-learn's handwritten
digits) whose `labels` cells hold the digits present, trained, evaluated, exported and predicted from the CLI; and
the one-line mistakes of the task."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_ok, assert_user_error, read_csv, read_json, run_in_one_process, write_png

DIGITS = 5  # labels 0..4
IMAGES = 420
TRAIN = ["task=multilabel", "dataset=csv", "model=simple_cnn", "epochs=6", "batch_size=32", "precision=fp32",
         "optimizer.lr=0.003", "dataset.image_size=16", "dataset.channels=1"]


def digit_mosaics(folder: Path, n: int = IMAGES, seed: int = 0) -> Path:
    """n 16x16 PNGs, each a 2x2 grid of 8x8 digits (a cell empty with probability 0.3), and labels.csv naming the
    digits present (an empty cell for a mosaic of four empty cells)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < DIGITS
    pixels = (digits.images[keep] * (255 / 16)).round().astype(np.uint8)
    target = digits.target[keep]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image, present = np.zeros((16, 16), np.uint8), set()
        for cell in range(4):
            if rng.random() < 0.3:
                continue
            j = int(rng.integers(len(target)))
            r, c = divmod(cell, 2)
            image[8 * r:8 * r + 8, 8 * c:8 * c + 8] = pixels[j]
            present.add(int(target[j]))
        write_png(folder / f"m{i:04d}.png", image[None])
        rows.append({"path": f"m{i:04d}.png", "labels": "|".join(str(d) for d in sorted(present))})
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "labels.csv"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One multilabel training run, then eval, predict and export of its best.pt, in one process."""
    root = tmp_path_factory.mktemp("multilabel")
    labels = digit_mosaics(root / "mosaics")
    run_dir = root / "run"
    best = run_dir / "checkpoints" / "best.pt"
    inputs = root / "mosaics"
    mix = root / "mix"  # every training option at once, distilled from the first run's best.pt
    mixed = [*[a for a in TRAIN if not a.startswith("epochs=")], f"dataset.file={labels}", "augment=cutmix", "loss=asl", "ema.decay=0.9",
             "label_smoothing=0.1", "dataset.class_weights=auto", "tta=hflip", f"distill.teacher={best}",
             "dataset.folds=3", "dataset.fold=1"]
    results = run_in_one_process({
        "train": (["train", *TRAIN, f"dataset.file={labels}", f"hydra.run.dir={run_dir}"], root),
        "eval": (["eval", f"checkpoint={best}", f"hydra.run.dir={root / 'eval'}"], root),
        "predict": (["predict", f"checkpoint={best}", f"inputs={inputs}", f"hydra.run.dir={root / 'predict'}"],
                    root),
        "export": (["export", f"checkpoint={best}", "format=onnx", f"hydra.run.dir={root / 'export'}"], root),
        "eval_onnx": (["eval", f"checkpoint={root / 'export' / 'simple_cnn.onnx'}",
                       f"hydra.run.dir={root / 'eval_onnx'}"], root),
        "mix": (["train", *mixed, "epochs=1", f"hydra.run.dir={mix}"], root),
        "resume": (["train", *mixed, f"resume={mix}", "epochs=2", "overwrite=true"], root),
        "ensemble": (["eval", f"checkpoint=[{best},{mix / 'checkpoints' / 'best.pt'}]",
                      f"hydra.run.dir={root / 'ensemble'}"], root),
        "single_label_data": (["eval", f"checkpoint={best}", "dataset=digits", f"hydra.run.dir={root / 'digits'}"],
                              root),
        "voting": (["eval", f"checkpoint=[{best},{mix / 'checkpoints' / 'best.pt'}]", "ensemble=voting",
                    f"hydra.run.dir={root / 'voting'}"], root),
    })
    return root, run_dir, results


def test_multilabel_run_learns_the_label_sets_and_tunes_thresholds(trained):
    root, run_dir, results = trained
    assert_ok(results["train"])
    rows = read_csv(run_dir / "metrics.csv")
    assert "val_map" in rows[0] and len(rows) == 6
    assert float(rows[-1]["val_map"]) > float(rows[0]["val_map"])
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed"
    best_row = next(r for r in rows if int(r["epoch"]) == summary["best_epoch"])
    assert summary["best_val_map"] == pytest.approx(max(float(r["val_map"]) for r in rows))
    assert float(best_row["val_map"]) == pytest.approx(summary["best_val_map"])
    ckpt = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["task"] == "multilabel" and ckpt["classes"] == [str(d) for d in range(DIGITS)]
    assert len(ckpt["thresholds"]) == DIGITS and all(0 < t < 1 for t in ckpt["thresholds"])
    assert ckpt["thresholds"] != [0.5] * DIGITS  # tuned on the validation split
    metrics = read_json(run_dir / "eval" / "metrics.json")
    assert metrics["map_macro"] > 0.85, metrics  # far above the labels' base rate (~0.5)
    assert summary["test_map"] == metrics["map_macro"] and summary["test_accuracy"] == metrics["accuracy"]
    per_label = read_csv(run_dir / "eval" / "per_label.csv")
    assert [r["label"] for r in per_label] == [str(d) for d in range(DIGITS)]
    for name in ("ap_per_label.png", "confusion_per_label.png", "pr_curves.png"):
        assert (run_dir / "eval" / name).stat().st_size > 1000
    assert "test mAP (macro)" in results["train"].stdout
    page = (run_dir / "report.html").read_text()
    assert 'id="per-label"' in page and "test mAP" in page and page.count("data:image/png;base64,") == 3


def test_eval_of_a_multilabel_checkpoint_gives_the_training_runs_numbers(trained):
    root, run_dir, results = trained
    assert_ok(results["eval"])
    trained_metrics = read_json(run_dir / "eval" / "metrics.json")
    evaluated = read_json(root / "eval" / "metrics.json")
    for key in ("map_macro", "map_micro", "f1_micro", "f1_macro", "hamming_loss", "accuracy"):
        assert evaluated[key] == pytest.approx(trained_metrics[key], abs=1e-6), key
    rows = read_csv(root / "eval" / "predictions.csv")
    assert {"label", "probability", "top1_label", "target"} <= set(rows[0])


def test_predictions_hold_every_label_at_or_above_its_threshold(trained):
    root, run_dir, results = trained
    assert_ok(results["predict"])
    thresholds = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["thresholds"]
    rows = read_csv(root / "predict" / "predictions.csv")
    assert len(rows) == IMAGES
    truth = {r["path"]: r["labels"] for r in read_csv(root / "mosaics" / "labels.csv")}
    right = 0
    for row in rows:
        labels = [x for x in row["label"].split("|") if x]
        probs = [float(p) for p in row["probability"].split("|") if p]
        assert len(labels) == len(probs)
        assert all(p >= thresholds[int(label)] for label, p in zip(labels, probs))
        ranked = {row[f"top{j}_label"]: float(row[f"top{j}_probability"]) for j in range(1, DIGITS + 1)}
        missed = [d for d in map(str, range(DIGITS)) if d not in labels]
        assert all(ranked[d] < thresholds[int(d)] for d in missed)
        right += sorted(labels) == sorted(x for x in truth[Path(row["path"]).name].split("|") if x)
    assert right / len(rows) > 0.35  # whole sets right on many images (chance: ~0.03)
    entries = json.loads((root / "predict" / "predictions.json").read_text())
    assert [e["label"] for e in entries[0]["labels"]] == [x for x in rows[0]["label"].split("|") if x]


def test_an_exported_multilabel_model_carries_its_thresholds_and_scores_alike(trained):
    root, run_dir, results = trained
    assert_ok(results["export"])
    assert_ok(results["eval_onnx"])
    import onnx

    props = {p.key: p.value for p in onnx.load(str(root / "export" / "simple_cnn.onnx")).metadata_props}
    thresholds = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["thresholds"]
    assert props["imgcls.task"] == "multilabel"
    assert json.loads(props["imgcls.thresholds"]) == pytest.approx(thresholds)
    exported, trained_metrics = read_json(root / "eval_onnx" / "metrics.json"), read_json(root / "eval" / "metrics.json")
    assert exported["map_macro"] == pytest.approx(trained_metrics["map_macro"], abs=1e-4)
    assert read_csv(root / "eval_onnx" / "predictions.csv")[0]["label"] == \
        read_csv(root / "eval" / "predictions.csv")[0]["label"]


def test_every_training_option_trains_label_sets_resumes_and_ensembles(trained):
    root, run_dir, results = trained
    assert_ok(results["mix"])
    mix = root / "mix"
    rows = read_csv(mix / "metrics.csv")
    assert {"val_map", "ema_val_accuracy", "distill_loss"} <= set(rows[0])
    assert float(rows[0]["distill_loss"]) > 0
    assert (mix / "checkpoints" / "best_ema.pt").is_file()
    for name in ("best.pt", "best_ema.pt"):  # each tuned on val with its own weights
        ckpt = torch.load(mix / "checkpoints" / name, weights_only=True)
        assert ckpt["task"] == "multilabel" and len(ckpt["thresholds"]) == DIGITS
    assert_ok(results["resume"])
    assert [int(r["epoch"]) for r in read_csv(mix / "metrics.csv")] == [1, 2]
    assert read_json(mix / "summary.json")["status"] == "completed"
    assert_ok(results["ensemble"])
    members = read_csv(root / "ensemble" / "members.csv")
    assert [r["member"] for r in members][-1].startswith("ensemble") and "map_macro" in members[0]
    # the ensemble's probabilities are the mean of its members' sigmoids (predictions.csv rounds to 6 places)
    first = read_csv(root / "ensemble" / "members" / "0" / "predictions.csv")
    second = read_csv(root / "ensemble" / "members" / "1" / "predictions.csv")
    both = read_csv(root / "ensemble" / "predictions.csv")
    top = lambda row: {row[f"top{j}_label"]: float(row[f"top{j}_probability"]) for j in range(1, DIGITS + 1)}  # noqa: E731
    for a, b, mean in zip(first[:20], second[:20], both[:20]):
        for label, p in top(mean).items():
            assert p == pytest.approx((top(a)[label] + top(b)[label]) / 2, abs=2e-6)
    assert_user_error(results["voting"], "voting", "multilabel")
    assert_user_error(results["single_label_data"], "digits", "one label per image", "multilabel")


def test_multilabel_mistakes_are_one_line(tmp_path, trained_run):
    labels = digit_mosaics(tmp_path / "m", n=60)
    single = tmp_path / "single.csv"
    single.write_text("path,label\n" + "".join(f"m{i:04d}.png,{i % 2}\n" for i in range(60)))
    calls = {
        "asl_multiclass": ["train", "loss=asl", "epochs=1"],
        "threshold_multiclass": ["train", "threshold=0.3", "epochs=1"],
        "bad_threshold": ["train", "task=multilabel", "dataset=csv", f"dataset.file={labels}", "threshold=1.5"],
        "balanced": ["train", "task=multilabel", "dataset=csv", f"dataset.file={labels}", "dataset.sampler=balanced"],
        "unknown_task": ["train", "task=multilable"],
        "single_label_data": ["train", "task=multilabel", "epochs=1"],
        "map_multiclass": ["train", "early_stopping.metric=val_map", "epochs=1"],
        "multiclass_checkpoint": ["eval", f"checkpoint={trained_run.best}", "dataset=csv", f"dataset.file={labels}"],
        "asl_gamma": ["train", "task=multilabel", "dataset=csv", f"dataset.file={labels}", "loss=asl",
                      "loss.gamma_neg=-1"],
        "check": ["check", "task=multilabel", "dataset=csv", f"dataset.file={labels}"],
        "lr_find": ["lr_find", "task=multilabel", "dataset=csv", f"dataset.file={labels}", "dataset.image_size=16",
                    "lr_find.steps=30", f"hydra.run.dir={tmp_path / 'lr'}"],
    }
    results = run_in_one_process({k: (v, tmp_path) for k, v in calls.items()})
    assert_user_error(results["asl_multiclass"], "loss=asl", "task=multiclass")
    assert_user_error(results["threshold_multiclass"], "threshold", "multilabel")
    assert_user_error(results["bad_threshold"], "threshold", "(0, 1)")
    assert_user_error(results["balanced"], "sampler", "multilabel")
    assert_user_error(results["unknown_task"], "multilabel")
    assert_user_error(results["single_label_data"], "digits", "task=multilabel")
    assert_user_error(results["map_multiclass"], "val_map")
    assert_user_error(results["multiclass_checkpoint"], "multi-label", "multiclass")
    assert_user_error(results["asl_gamma"], "loss.gamma_neg")
    assert_user_error(results["check"], "imgcls check", "multilabel")
    assert_ok(results["lr_find"])  # the range test runs on label sets with the task's loss
    assert len(read_csv(tmp_path / "lr" / "lr_find.csv")) > 5
