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
    results = run_in_one_process({
        "train": (["train", *TRAIN, f"dataset.file={labels}", f"hydra.run.dir={run_dir}"], root),
        "eval": (["eval", f"checkpoint={best}", f"hydra.run.dir={root / 'eval'}"], root),
        "predict": (["predict", f"checkpoint={best}", f"inputs={inputs}", f"hydra.run.dir={root / 'predict'}"],
                    root),
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
    assert "map" in results["train"].stdout.lower()


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
    assert right / len(rows) > 0.6  # whole sets right on most images (train and test images alike)
    entries = json.loads((root / "predict" / "predictions.json").read_text())
    assert [e["label"] for e in entries[0]["labels"]] == [x for x in rows[0]["label"].split("|") if x]


def test_multilabel_mistakes_are_one_line(tmp_path):
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
    }
    results = run_in_one_process({k: (v, tmp_path) for k, v in calls.items()})
    assert_user_error(results["asl_multiclass"], "loss=asl", "task=multiclass")
    assert_user_error(results["threshold_multiclass"], "threshold", "multilabel")
    assert_user_error(results["bad_threshold"], "threshold", "(0, 1)")
    assert_user_error(results["balanced"], "sampler", "multilabel")
    assert_user_error(results["unknown_task"], "multilabel")
    assert_user_error(results["single_label_data"], "digits", "task=multilabel")
    assert_user_error(results["map_multiclass"], "val_map")
