"""End-to-end tests of the `imgcls` command line, run the way a user types it.

The contract is /work/shared/DESIGN.md. Real subprocesses: one tiny training run shared by the
train/checkpoint/eval/predict tests, one sweep, one failing sweep, two learnability runs, an eval and a predict
of the tiny run, the installed entry point, and four user mistakes (caught by the command word, by Hydra, by
loading a checkpoint, by a malicious one). The other evals, predicts, help texts and user mistakes run through
cli.main in one child process each batch (conftest.run_in_one_process): the same exit status and output.
"""
from __future__ import annotations

import json
import math
import re
import sys
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import (
    SYNTHETIC_CLASSES,
    TINY,
    TINY_BATCH_SIZE,
    TINY_EPOCHS,
    TINY_NUM_SAMPLES,
    TINY_SETTINGS_NO_EPOCHS,
    Result,
    assert_no_traceback,
    assert_ok,
    assert_user_error,
    cli_env,
    csv_header,
    files_under,
    png_shape,
    read_csv,
    read_json,
    run_cli,
    run_in_one_process,
    run_many,
    split_ids,
    synthetic_images,
    walk_keys,
    write_broken_files,
    write_png,
)

METRICS_COLUMNS = ["epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds",
                   "images_per_second"]
TIMING_COLUMNS = {"epoch_seconds", "images_per_second"}
SUMMARY_KEYS = {"status", "best_epoch", "best_val_accuracy", "test_accuracy", "wall_seconds",
                "train_images_per_second", "seed", "device", "versions", "command"}
METRIC_KEYS = {"accuracy", "top5_accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
               "recall_weighted", "f1_weighted", "loss", "num_samples"}
SWEEP_COLUMNS = ["job", "overrides", "status", "best_val_accuracy", "test_accuracy", "wall_seconds"]
TOPK_COLUMNS = [c for k in range(2, 6) for c in (f"top{k}_label", f"top{k}_probability")]
TIMESTAMP = r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"
BASE_LR = 0.001  # conf/optimizer/adam.yaml, the default optimizer

# The tiny run's split sizes: 600 balanced images, val_fraction 0.15, test_fraction 0.2, per class.
N_VAL = round(0.15 * TINY_NUM_SAMPLES)
N_TEST = round(0.2 * TINY_NUM_SAMPLES)
N_TRAIN = TINY_NUM_SAMPLES - N_VAL - N_TEST


def is_fraction(value) -> bool:
    return isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    return read_csv(run_dir / "metrics.csv")


def prob_tolerance(summary: dict) -> float:
    """Same numbers to 6 digits in fp32; reduced precision (bf16 on GPUs/AMX CPUs) gets a loose bound."""
    return 2e-6 if summary.get("precision", "fp32") == "fp32" else 0.05


# ============================================================================================ 1. train run
def test_train_prints_its_run_directory_under_outputs_train(trained_run):
    result, run_dir = trained_run.result, trained_run.run_dir
    assert run_dir.is_dir(), result.describe()
    rel = run_dir.resolve().relative_to(result.cwd.resolve()).as_posix()
    assert re.fullmatch(rf"outputs/train/{TIMESTAMP}_simple_cnn_synthetic", rel), rel
    # Nothing else was written into the user's folder.
    assert {p.name for p in result.cwd.iterdir()} == {"outputs"}
    assert "epoch 4/4" in result.stdout
    assert result.stderr.strip() == "", result.describe()


def test_train_run_directory_holds_exactly_the_design_files(trained_run):
    expected = {
        ".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml",
        "train.log", "config.yaml", "metrics.csv", "summary.json",
        "checkpoints/last.pt", "checkpoints/best.pt",
        "eval/metrics.json", "eval/per_class.csv", "eval/confusion_matrix.csv", "eval/confusion_matrix.png",
        "eval/predictions.csv", "eval/classification_report.txt", "eval/confusion_matrix_normalized.csv",
        "eval/reliability.png", "eval/misclassified.png",
        "plots/curves.png", "plots/augment_preview.png", "plots/lr.png", "splits.csv", "report.html",
    }
    assert files_under(trained_run.run_dir) == expected  # no temporary or stray files either


def test_train_metrics_csv_has_one_row_per_epoch(trained_run):
    run_dir = trained_run.run_dir
    assert csv_header(run_dir / "metrics.csv") == METRICS_COLUMNS
    rows = metric_rows(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, TINY_EPOCHS + 1))
    for e, row in enumerate(rows):
        # schedule=cosine (the default), stepped per iteration: the lr at the start of epoch e+1.
        expected_lr = BASE_LR * 0.5 * (1 + math.cos(math.pi * e / TINY_EPOCHS))
        assert float(row["lr"]) == pytest.approx(expected_lr, rel=1e-4), row
        for key in ("train_accuracy", "val_accuracy"):
            assert is_fraction(float(row[key])), row
        for key in ("train_loss", "val_loss"):
            assert 0 < float(row[key]) < 10 and math.isfinite(float(row[key])), row
        assert float(row["epoch_seconds"]) >= 0 and float(row["images_per_second"]) > 0, row
    # It learns: the loss goes down and the last epoch beats chance (0.2) on validation.
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["val_accuracy"]) > 0.4


def test_train_summary_json(trained_run):
    run_dir = trained_run.run_dir
    summary = read_json(run_dir / "summary.json")
    assert SUMMARY_KEYS <= set(summary), sorted(SUMMARY_KEYS - set(summary))
    assert summary["status"] == "completed"
    rows = metric_rows(run_dir)
    val = [float(r["val_accuracy"]) for r in rows]
    assert summary["best_val_accuracy"] == pytest.approx(max(val), abs=1e-6)
    assert summary["best_epoch"] == 1 + val.index(max(val))  # the first epoch with the best score
    test_metrics = read_json(run_dir / "eval" / "metrics.json")
    assert summary["test_accuracy"] == pytest.approx(test_metrics["accuracy"], abs=1e-12)
    assert summary["test_accuracy"] > 0.4  # chance is 0.2
    assert summary["seed"] == 0
    assert summary["wall_seconds"] > 0 and summary["train_images_per_second"] > 0
    # The run's rate, not one epoch's: every epoch trains as many images, so all of them over all the seconds is the
    # harmonic mean of the epochs' rates (the first, slower epoch included).
    rates = [float(r["images_per_second"]) for r in rows]
    harmonic = len(rates) / sum(1 / r for r in rates)
    assert summary["train_images_per_second"] == pytest.approx(harmonic, rel=0.005, abs=0.2), (rates, summary)
    assert re.fullmatch(r"cpu|cuda(:\d+)?|mps", summary["device"]), summary["device"]
    import torch

    assert summary["versions"]["torch"] == torch.__version__
    assert summary["command"].startswith("imgcls train ") and "epochs=4" in summary["command"]


def test_train_config_yaml_is_the_resolved_config(trained_run):
    run_dir = trained_run.run_dir
    text = (run_dir / "config.yaml").read_text()
    assert "_target_" not in text
    cfg = yaml.safe_load(text)
    assert "hydra" not in cfg
    assert cfg["epochs"] == TINY_EPOCHS and cfg["batch_size"] == TINY_BATCH_SIZE and cfg["seed"] == 0
    assert cfg["model"]["name"] == "simple_cnn" and cfg["model"]["widths"] == [8, 16, 16]
    assert cfg["model"]["hidden"] == 32
    assert cfg["dataset"]["name"] == "synthetic" and cfg["dataset"]["num_samples"] == TINY_NUM_SAMPLES
    assert cfg["schedule"]["name"] == "cosine" and cfg["optimizer"]["name"] == "adam"
    assert yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) == TINY
    log = (run_dir / "train.log").read_text()
    assert f"epoch {TINY_EPOCHS}/{TINY_EPOCHS}" in log


def test_train_splits_csv(trained_run):
    splits = split_ids(trained_run.run_dir)
    assert csv_header(trained_run.run_dir / "splits.csv") == ["index", "split"]
    assert {k: len(v) for k, v in splits.items()} == {"train": N_TRAIN, "val": N_VAL, "test": N_TEST}
    every = [i for ids in splits.values() for i in ids]
    assert sorted(every, key=int) == [str(i) for i in range(TINY_NUM_SAMPLES)]  # each sample exactly once


def test_train_eval_reports(trained_run):
    eval_dir = trained_run.run_dir / "eval"
    metrics = read_json(eval_dir / "metrics.json")
    assert METRIC_KEYS <= set(metrics), sorted(METRIC_KEYS - set(metrics))
    for key in METRIC_KEYS - {"loss", "num_samples"}:
        assert is_fraction(metrics[key]), (key, metrics[key])
    assert metrics["num_samples"] == N_TEST
    assert metrics["top5_accuracy"] == 1.0  # 5 classes: the true class is always in the top 5
    assert 0 < metrics["loss"] < 10

    test_ids = split_ids(trained_run.run_dir)["test"]
    header = csv_header(eval_dir / "predictions.csv")
    assert header == ["index", "label", "probability", *TOPK_COLUMNS, "target", "error"]
    rows = read_csv(eval_dir / "predictions.csv")
    assert sorted(r["index"] for r in rows) == sorted(test_ids)
    for row in rows:
        assert row["error"] == "" and row["label"] in SYNTHETIC_CLASSES and row["target"] in SYNTHETIC_CLASSES
        labels = [row["label"], *(row[f"top{k}_label"] for k in range(2, 6))]
        probs = [float(row["probability"]), *(float(row[f"top{k}_probability"]) for k in range(2, 6))]
        assert sorted(labels) == sorted(SYNTHETIC_CLASSES)  # top-5 of 5 classes: each class once
        assert probs == sorted(probs, reverse=True) and all(is_fraction(p) for p in probs)
        assert sum(probs) == pytest.approx(1.0, abs=5e-5)
    hits = sum(r["label"] == r["target"] for r in rows)
    assert metrics["accuracy"] == pytest.approx(hits / len(rows), abs=1e-12)

    per_class = read_csv(eval_dir / "per_class.csv")
    assert [r["class"] for r in per_class] == SYNTHETIC_CLASSES
    assert sum(int(r["support"]) for r in per_class) == N_TEST
    for r in per_class:
        true = [x for x in rows if x["target"] == r["class"]]
        assert int(r["support"]) == len(true)
        assert float(r["recall"]) == pytest.approx(sum(x["label"] == x["target"] for x in true) / len(true),
                                                   abs=1e-5)

    confusion = (eval_dir / "confusion_matrix.csv").read_text().splitlines()
    assert confusion[0].split(",")[1:] == SYNTHETIC_CLASSES
    matrix = [[int(v) for v in line.split(",")[1:]] for line in confusion[1:]]
    assert len(matrix) == 5 and all(len(r) == 5 for r in matrix)
    assert sum(map(sum, matrix)) == N_TEST
    assert sum(matrix[i][i] for i in range(5)) == hits

    assert len(png_shape(eval_dir / "confusion_matrix.png")) >= 2
    height, width = png_shape(trained_run.run_dir / "plots" / "curves.png")[:2]
    assert height > 100 and width > 100


# ============================================================================================ 2. checkpoints
def load_checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def test_checkpoints_hold_the_design_keys(trained_run):
    import torch

    config = yaml.safe_load((trained_run.run_dir / "config.yaml").read_text())
    summary = read_json(trained_run.run_dir / "summary.json")
    rows = metric_rows(trained_run.run_dir)
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(trained_run.run_dir / "checkpoints" / name)
        assert ckpt["format"] == "imgcls-checkpoint" and ckpt["format_version"] == 1, name
        assert ckpt["model"]["name"] == "simple_cnn"
        kwargs = ckpt["model"]["kwargs"]
        assert kwargs["widths"] == [8, 16, 16] and kwargs["hidden"] == 32 and kwargs["num_classes"] == 5
        assert kwargs["in_channels"] == 3 and kwargs["image_size"] == 32
        assert ckpt["state_dict"] and all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
        assert list(ckpt["classes"]) == SYNTHETIC_CLASSES
        inp = ckpt["input"]
        assert inp["channels"] == 3 and inp["size"] == 32
        assert len(inp["mean"]) == 3 and len(inp["std"]) == 3
        assert all(0 < m < 1 for m in inp["mean"]) and all(0 < s < 1 for s in inp["std"])
        assert ckpt["config"] == config, name
        assert {"epoch", "step", "metrics"} <= set(ckpt)
        steps_per_epoch = N_TRAIN // TINY_BATCH_SIZE  # drop_last
        assert ckpt["step"] == ckpt["epoch"] * steps_per_epoch, name
        row = rows[ckpt["epoch"] - 1]
        assert ckpt["metrics"]["val_accuracy"] == pytest.approx(float(row["val_accuracy"]), rel=1e-5)
        assert ckpt["metrics"]["train_loss"] == pytest.approx(float(row["train_loss"]), rel=1e-5)
    best, last = load_checkpoint(trained_run.best), load_checkpoint(trained_run.last)
    assert last["epoch"] == TINY_EPOCHS
    assert best["epoch"] == summary["best_epoch"]
    assert best["metrics"]["val_accuracy"] == pytest.approx(summary["best_val_accuracy"], abs=1e-9)
    for key in ("optimizer", "scheduler", "rng"):
        assert last.get(key), f"last.pt has no {key}"
    assert last["optimizer"]["state"], "last.pt's optimizer state is empty"


def test_no_import_path_in_saved_configs(trained_run):
    assert "_target_" not in (trained_run.run_dir / "config.yaml").read_text()
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(trained_run.run_dir / "checkpoints" / name)
        for key, value in walk_keys(ckpt["config"]):
            assert "_target_" not in str(value) and "_target_" not in key, (name, key, value)


# ============================================================================================ 3-4. eval
@pytest.fixture(scope="module")
def eval_runs(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    ckpt = f"checkpoint={trained_run.best}"
    return {
        "test": run_cli("eval", ckpt, f"hydra.run.dir={base / 'test_run'}", cwd=base / "test_cwd"),
        # No hydra.run.dir: lands in ./outputs/eval/<timestamp> of its own folder (through cli.main, in that folder).
        **run_in_one_process({"val": (["eval", ckpt, "dataset=synthetic", "split=val"], base / "val_cwd")}),
    }


def test_eval_reproduces_the_training_runs_test_evaluation(eval_runs, trained_run):
    result = eval_runs["test"]
    assert_ok(result)
    run_dir = result.run_dir
    assert run_dir.name == "test_run"
    assert {"metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png",
            "predictions.csv"} <= {p.name for p in run_dir.iterdir()}
    ours, train = read_json(run_dir / "metrics.json"), read_json(trained_run.run_dir / "eval" / "metrics.json")
    assert METRIC_KEYS <= set(ours)
    numeric = [k for k, v in train.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert METRIC_KEYS <= set(numeric)
    for key in numeric:
        assert ours[key] == pytest.approx(train[key], rel=1e-9, abs=1e-12), key
    assert ours.get("split") == "test"
    for name in ("predictions.csv", "per_class.csv", "confusion_matrix.csv"):
        assert (run_dir / name).read_text() == (trained_run.run_dir / "eval" / name).read_text(), name


def test_eval_on_the_val_split(eval_runs, trained_run):
    result = eval_runs["val"]
    assert_ok(result)
    rel = result.run_dir.resolve().relative_to(result.cwd.resolve()).as_posix()
    assert re.fullmatch(rf"outputs/eval/{TIMESTAMP}", rel), rel
    metrics = read_json(result.run_dir / "metrics.json")
    val_ids = split_ids(trained_run.run_dir)["val"]
    assert metrics["num_samples"] == len(val_ids) == N_VAL
    assert metrics.get("split") == "val"
    rows = read_csv(result.run_dir / "predictions.csv")
    assert sorted(r["index"] for r in rows) == sorted(val_ids)
    # The same weights on the same images: the val accuracy recorded in best.pt during training.
    best = load_checkpoint(trained_run.best)
    assert metrics["accuracy"] == pytest.approx(best["metrics"]["val_accuracy"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(best["metrics"]["val_loss"], rel=1e-3)


# ============================================================================================ 5. predict
@pytest.fixture(scope="module")
def predict_inputs(trained_run, tmp_path_factory):
    """Test-split images of the tiny run as PNG files (a folder with a subfolder), plus two broken files.

    The synthetic generator with the run's seed (0) regenerates the exact uint8 images, so predict must give
    the probabilities that the training run's eval/predictions.csv lists for the same indices.
    """
    base = tmp_path_factory.mktemp("predict_inputs")
    folder = base / "photos"
    images, _ = synthetic_images(TINY_NUM_SAMPLES, 5, 32, 3, seed=0)
    test_ids = split_ids(trained_run.run_dir)["test"][:4]
    good = {}
    for n, sample in enumerate(test_ids):
        target = folder / ("sub" if n >= 2 else "") / f"sample_{sample}.png"
        good[write_png(target, images[int(sample)])] = sample
    broken = folder / "broken.png"  # text bytes, on top
    broken.write_text("this is not a PNG file\n")
    empty = folder / "sub" / "empty.jpg"  # zero bytes, in the subfolder
    empty.write_bytes(b"")
    bad_folder = base / "all_broken"
    write_broken_files(bad_folder)
    return {"folder": folder, "good": good, "broken": [broken, empty], "all_broken": bad_folder}


@pytest.fixture(scope="module")
def predict_runs(trained_run, predict_inputs, tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    ckpt = f"checkpoint={trained_run.best}"
    single = next(iter(predict_inputs["good"]))
    good = [str(p) for p in predict_inputs["good"]][:2]
    listed = base / "inputs.txt"
    listed.write_text("# photos to label\n" + "\n".join([*good, str(predict_inputs["broken"][0]), "missing.png"])
                      + "\n\n")
    # The folder (broken files among good ones) as typed, in a subprocess; the other inputs through cli.main.
    folder = run_cli("predict", ckpt, f"inputs={predict_inputs['folder']}", f"hydra.run.dir={base / 'folder'}",
                     cwd=base)
    return {"folder": folder, **run_in_one_process({
        "list": (["predict", ckpt, f"inputs=@{listed}", f"hydra.run.dir={base / 'list'}"], base),
        "file": (["predict", ckpt, f"inputs={single}", f"hydra.run.dir={base / 'file'}"], base),
        "glob": (["predict", ckpt, f"inputs={predict_inputs['folder']}/**/*.png", f"hydra.run.dir={base / 'glob'}"],
                 base),
        "all_broken": (["predict", ckpt, f"inputs={predict_inputs['all_broken']}",
                        f"hydra.run.dir={base / 'all_broken'}"], base),
    })}


def check_prediction_rows(rows, predict_inputs, trained_run):
    """Good files: labels and probabilities as eval gave for those samples; broken files: an error, no label."""
    eval_rows = {r["index"]: r for r in read_csv(trained_run.run_dir / "eval" / "predictions.csv")}
    tol = prob_tolerance(read_json(trained_run.run_dir / "summary.json"))
    good = {str(p): s for p, s in predict_inputs["good"].items()}
    broken = {str(p) for p in predict_inputs["broken"]}
    for row in rows:
        if row["path"] in broken:
            assert row["error"].strip(), row
            assert row["label"] == "" and row["probability"] == "", row
            continue
        assert row["path"] in good, row
        assert row["error"] == "", row
        assert row["label"] in SYNTHETIC_CLASSES and row["top2_label"] in SYNTHETIC_CLASSES, row
        probs = [float(row["probability"]), *(float(row[f"top{k}_probability"]) for k in range(2, 6))]
        assert all(is_fraction(p) for p in probs) and probs == sorted(probs, reverse=True), row
        expected = eval_rows[good[row["path"]]]
        assert float(row["probability"]) == pytest.approx(float(expected["probability"]), abs=tol), (row, expected)
        if float(expected["probability"]) - float(expected["top2_probability"]) > 2 * tol:
            assert row["label"] == expected["label"], (row, expected)


def test_predict_a_folder_with_broken_files(predict_runs, predict_inputs, trained_run):
    result = predict_runs["folder"]
    assert_ok(result)
    out = result.run_dir / "predictions.csv"
    assert csv_header(out) == ["path", "label", "probability", *TOPK_COLUMNS, "error"]
    rows = read_csv(out)
    expected = sorted([str(p) for p in predict_inputs["good"]] + [str(p) for p in predict_inputs["broken"]])
    assert sorted(r["path"] for r in rows) == expected  # one row per file, subfolder included
    check_prediction_rows(rows, predict_inputs, trained_run)
    height, width = png_shape(result.run_dir / "predictions.png")[:2]  # the decoded images with their labels
    assert 100 <= height <= 4000 and 100 <= width <= 4000


def test_predict_a_single_file(predict_runs, predict_inputs, trained_run):
    result = predict_runs["file"]
    assert_ok(result)
    rows = read_csv(result.run_dir / "predictions.csv")
    assert [r["path"] for r in rows] == [str(next(iter(predict_inputs["good"])))]
    check_prediction_rows(rows, predict_inputs, trained_run)


def test_predict_a_glob_pattern(predict_runs, predict_inputs, trained_run):
    result = predict_runs["glob"]
    assert_ok(result)
    rows = read_csv(result.run_dir / "predictions.csv")
    pngs = [str(p) for p in predict_inputs["good"]] + [str(predict_inputs["broken"][0])]
    assert sorted(r["path"] for r in rows) == sorted(pngs)  # **/*.png: recursive, no .jpg
    check_prediction_rows(rows, predict_inputs, trained_run)


def test_predict_a_list_file_in_its_order_with_json_beside_the_csv(predict_runs, predict_inputs, trained_run):
    result = predict_runs["list"]
    assert_ok(result)
    rows = read_csv(result.run_dir / "predictions.csv")
    good = [str(p) for p in predict_inputs["good"]][:2]
    missing = str(Path(result.args[2].split("=@", 1)[1]).parent / "missing.png")
    assert [r["path"] for r in rows] == [*good, str(predict_inputs["broken"][0]), missing]
    assert rows[3]["error"] == "file not found" and rows[3]["label"] == ""
    check_prediction_rows(rows[:3], predict_inputs, trained_run)
    as_json = json.loads((result.run_dir / "predictions.json").read_text())
    assert [e["path"] for e in as_json] == [r["path"] for r in rows]
    assert as_json[0]["topk"][0] == {"label": rows[0]["label"], "probability": float(rows[0]["probability"])}
    assert len(as_json[0]["topk"]) == 5 and as_json[3]["topk"] == [] and as_json[3]["error"] == "file not found"


def test_predict_only_broken_files_is_a_user_error(predict_runs):
    assert_user_error(predict_runs["all_broken"], "decod")


# ============================================================================================ 6. sweeps
def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_", 1)[0]))


def job_overrides(job_dir: Path) -> list[str]:
    return yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())


def test_sweep_over_schedules(sweep_run):
    assert_ok(sweep_run)
    sweep_dir = sweep_run.run_dir
    assert sweep_dir.name == "sweep"
    jobs = job_dirs(sweep_dir)
    assert [p.name.split("_", 1)[0] for p in jobs] == ["0", "1"]
    assert "schedule=step" in job_overrides(jobs[0]) and "schedule=cosine" in job_overrides(jobs[1])
    for job in jobs:
        assert (job / "checkpoints" / "best.pt").is_file()
        assert read_json(job / "summary.json")["status"] == "completed"
    assert csv_header(sweep_dir / "summary.csv") == SWEEP_COLUMNS
    rows = read_csv(sweep_dir / "summary.csv")
    assert [r["job"] for r in rows] == ["0", "1"]
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert "schedule=step" in rows[0]["overrides"] and "schedule=cosine" in rows[1]["overrides"]
    for row, job in zip(rows, jobs):
        summary = read_json(job / "summary.json")
        for key in ("best_val_accuracy", "test_accuracy", "wall_seconds"):
            assert float(row[key]) == pytest.approx(summary[key], rel=1e-5), (key, row)
    # The table is printed: every column name and one 'completed' per job.
    for column in SWEEP_COLUMNS:
        assert column in sweep_run.stdout
    assert sweep_run.stdout.count("completed") >= 2
    # Each job really ran its own schedule: step (step_size 5 > 4 epochs) keeps the lr, cosine decays it.
    step_lrs = [float(r["lr"]) for r in metric_rows(jobs[0])]
    cosine_lrs = [float(r["lr"]) for r in metric_rows(jobs[1])]
    assert step_lrs == pytest.approx([BASE_LR] * TINY_EPOCHS)
    assert cosine_lrs[0] == pytest.approx(BASE_LR) and cosine_lrs == sorted(cosine_lrs, reverse=True)
    assert cosine_lrs[-1] < BASE_LR / 2


def test_sweep_compares_its_jobs_in_one_figure(sweep_run):
    """The seed's step-vs-cosine comparison: compare.png beside summary.csv, one line per job."""
    compare = sweep_run.run_dir / "compare.png"
    height, width = png_shape(compare)[:2]
    assert width > 1.5 * height  # three panels side by side
    assert "mean ± std of 2 completed" in sweep_run.stdout


def test_sweep_with_a_failing_job(failing_sweep_run):
    result = failing_sweep_run
    assert result.returncode == 1, result.describe()
    assert_no_traceback(result)
    sweep_dir = result.run_dir  # still printed last
    rows = read_csv(sweep_dir / "summary.csv")
    assert csv_header(sweep_dir / "summary.csv") == SWEEP_COLUMNS
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "failed")]
    assert "seed=1" in rows[0]["overrides"] and "seed=-1" in rows[1]["overrides"]
    assert [job_overrides(j)[0] for j in job_dirs(sweep_dir)] == ["seed=1", "seed=-1"]
    assert is_fraction(float(rows[0]["test_accuracy"])) and rows[1]["test_accuracy"] == ""
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2
    assert read_json(jobs[0] / "summary.json")["status"] == "completed"
    assert (jobs[0] / "checkpoints" / "best.pt").is_file()
    assert "seed" in result.stderr  # the failure is reported, naming the bad key
    assert "failed" in result.stdout


def test_eval_a_sweep_jobs_checkpoint_by_its_printed_path(sweep_run, tmp_path):
    """The job folder printed by the sweep, pasted into checkpoint=, must work unquoted.

    Regression: job folders used to be named like 1_batch_size=32,...,model.widths=[8,16,16],schedule=cosine,
    which Hydra's override grammar rejects ("mismatched input '=' expecting <EOF>").
    """
    assert_ok(sweep_run)
    printed = [m.group(1) for m in map(re.compile(r"^Run directory: (.+)$").match, sweep_run.stdout_lines) if m]
    assert len(printed) == 3, sweep_run.describe()  # one per job, then the sweep folder
    job = Path(printed[1])
    assert job.parent == sweep_run.run_dir and "schedule=cosine" in job_overrides(job)
    result = run_cli("eval", f"checkpoint={job}/checkpoints/best.pt", f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path)
    assert_ok(result)
    assert read_json(result.run_dir / "metrics.json")["accuracy"] == pytest.approx(
        read_json(job / "eval" / "metrics.json")["accuracy"])


# ============================================================================================ 9. determinism
def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def test_same_seed_gives_the_same_numbers(trained_run, sweep_run):
    """The sweep's cosine job has exactly the shared run's settings (seed 0), in another process."""
    assert_ok(sweep_run)
    twin = job_dirs(sweep_run.run_dir)[1]
    assert yaml.safe_load((twin / "config.yaml").read_text()) == yaml.safe_load(
        (trained_run.run_dir / "config.yaml").read_text())
    ours, theirs = metric_rows(trained_run.run_dir), metric_rows(twin)
    assert without_timing(ours) == without_timing(theirs)
    assert (twin / "splits.csv").read_text() == (trained_run.run_dir / "splits.csv").read_text()
    assert (twin / "eval" / "predictions.csv").read_text() == \
        (trained_run.run_dir / "eval" / "predictions.csv").read_text()


def test_another_seed_gives_other_numbers(trained_run, failing_sweep_run):
    """Job 0 of the failing sweep is the shared run's settings with seed=1."""
    job = job_dirs(failing_sweep_run.run_dir)[0]
    cfg = yaml.safe_load((job / "config.yaml").read_text())
    assert cfg["seed"] == 1 and cfg["epochs"] == TINY_EPOCHS
    ours, theirs = metric_rows(trained_run.run_dir), metric_rows(job)
    assert len(ours) == len(theirs)
    assert [r["train_loss"] for r in ours] != [r["train_loss"] for r in theirs]
    assert [r["val_loss"] for r in ours] != [r["val_loss"] for r in theirs]


# ============================================================================================ 7-8. user mistakes
def make_malicious_files(folder: Path, pwned: Path) -> tuple[Path, Path]:
    import os
    import pickle

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {pwned}",))

    plain = folder / "evil_pickle.pt"
    with open(plain, "wb") as f:
        pickle.dump(Payload(), f)
    saved = folder / "evil_torch_save.pt"
    torch.save({"format": "imgcls-checkpoint", "format_version": 1, "model": Payload()}, saved)
    return plain, saved


# name -> (what stderr must mention); the arguments are built in the fixture below.
MISTAKES = {
    "unknown_model_option": ["resnt", "resnet", "simple_cnn"],  # the close match and the choices
    "unknown_key": ["foo"],
    "negative_epochs": ["epochs", "-1"],
    "zero_batch_size": ["batch_size", "0"],
    "lr_not_a_number": ["optimizer.lr", "abc"],
    "eval_without_checkpoint": ["checkpoint"],
    "checkpoint_not_found": ["missing.pt", "not found"],
    "checkpoint_is_json": ["notes.pt"],
    "checkpoint_truncated": ["truncated.pt"],
    "checkpoint_other_classes": ["classes"],
    "evil_pickle": ["evil_pickle.pt"],
    "evil_torch_save": ["evil_torch_save.pt"],
    "predict_inputs_not_found": ["no_such_photos"],
    "predict_empty_folder": ["empty_folder"],
    "unknown_command": ["trian", "train"],
    "list_unknown_registry": ["modelz", "models"],
    "diverging_lr": ["diverged", "optimizer.lr"],  # a loss of nan: says so and what to lower
}
# These run as real subprocesses, exactly as typed (a mistake caught by the command word, by Hydra, by loading a
# checkpoint, by a malicious one); the others run in one process through cli.main (conftest.run_in_one_process).
MISTAKES_AS_SUBPROCESSES = {"unknown_command", "unknown_model_option", "checkpoint_not_found", "evil_torch_save"}


@pytest.fixture(scope="module")
def mistakes(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("mistakes")
    files = base / "files"
    files.mkdir()
    (files / "notes.pt").write_text('{"format": "imgcls-checkpoint", "note": "JSON, not a checkpoint"}\n')
    (files / "truncated.pt").write_bytes(trained_run.best.read_bytes()[:2000])
    (files / "empty_folder").mkdir()
    pwned = base / "PWNED"
    evil_pickle, evil_torch = make_malicious_files(files, pwned)
    ckpt = f"checkpoint={trained_run.best}"
    tiny_one_epoch = [*TINY_SETTINGS_NO_EPOCHS, "epochs=1"]
    no_batch = [a for a in TINY if not a.startswith("batch_size=")]
    args = {
        "unknown_model_option": ["train", "model=resnt"],
        "unknown_key": ["train", "foo=1"],
        "negative_epochs": ["train", *TINY_SETTINGS_NO_EPOCHS, "epochs=-1"],
        "zero_batch_size": ["train", *no_batch, "batch_size=0"],
        "lr_not_a_number": ["train", *tiny_one_epoch, "optimizer.lr=abc"],
        "eval_without_checkpoint": ["eval"],
        "checkpoint_not_found": ["eval", f"checkpoint={files / 'missing.pt'}"],
        "checkpoint_is_json": ["eval", f"checkpoint={files / 'notes.pt'}"],
        "checkpoint_truncated": ["eval", f"checkpoint={files / 'truncated.pt'}"],
        "checkpoint_other_classes": ["eval", ckpt, "dataset=digits"],  # 10 digit classes vs 5
        "evil_pickle": ["eval", f"checkpoint={evil_pickle}"],
        "evil_torch_save": ["eval", f"checkpoint={evil_torch}"],
        "predict_inputs_not_found": ["predict", ckpt, f"inputs={files / 'no_such_photos'}"],
        "predict_empty_folder": ["predict", ckpt, f"inputs={files / 'empty_folder'}"],
        "unknown_command": ["trian"],
        "list_unknown_registry": ["list", "modelz"],
        "diverging_lr": ["train", *tiny_one_epoch, "optimizer=sgd", "optimizer.lr=1e12",
                         f"hydra.run.dir={base / 'diverging_lr' / 'run'}"],
    }
    assert set(args) == set(MISTAKES)
    calls = {name: (a, base / name) for name, a in args.items()}
    in_process = {name: call for name, call in calls.items() if name not in MISTAKES_AS_SUBPROCESSES}
    results = {**run_many({name: calls[name] for name in MISTAKES_AS_SUBPROCESSES}), **run_in_one_process(in_process)}
    return {"results": results, "pwned": pwned, "files": files}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_user_mistake_is_one_line_and_status_2(mistakes, case):
    result: Result = mistakes["results"][case]
    assert_user_error(result, *MISTAKES[case])
    # A mistake caught before any work leaves no checkpoint behind.
    assert not list(result.cwd.rglob("*.pt")), result.describe()


def test_malicious_checkpoints_run_nothing(mistakes):
    files = mistakes["files"]
    assert b"system" in (files / "evil_pickle.pt").read_bytes()  # the payload really is in there
    assert (files / "evil_torch_save.pt").read_bytes()[:2] == b"PK"  # a real torch.save zip archive
    for case in ("evil_pickle", "evil_torch_save"):
        assert_user_error(mistakes["results"][case])
    assert not mistakes["pwned"].exists(), "loading a checkpoint executed code from it"


def test_diverged_run_is_recorded_as_diverged(mistakes):
    result = mistakes["results"]["diverging_lr"]
    assert_user_error(result, "diverged")
    summary = read_json(result.cwd / "run" / "summary.json")
    assert summary["status"] == "diverged", summary


# ============================================================================================ 10. help and list
@pytest.fixture(scope="module")
def help_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("help")
    return run_in_one_process({
        "top": (["--help"], base / "top"),
        "train_help": (["train", "--help"], base / "train_help"),
        "cfg_job": (["train", "--cfg", "job", "epochs=7", "model=resnet"], base / "cfg_job"),
    })


def test_top_level_help(help_runs):
    result = help_runs["top"]
    assert_ok(result)
    for command in ("train", "eval", "predict", "list"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command
    assert result.stderr.strip() == ""


def test_train_help_lists_the_config_groups(help_runs):
    result = help_runs["train_help"]
    assert_ok(result)
    groups = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+): (.+)$", result.stdout, re.M)}
    for group in ("model", "dataset", "augment", "optimizer", "schedule"):
        assert group in groups, (group, result.stdout[:2000])
    assert "resnet" in groups["model"] and "simple_cnn" in groups["model"]
    assert "synthetic" in groups["dataset"] and "cosine" in groups["schedule"]
    assert not (result.cwd / "outputs").exists()  # help writes nothing


def test_train_cfg_job_prints_the_composed_config(help_runs):
    result = help_runs["cfg_job"]
    assert_ok(result)
    assert "epochs:" in result.stdout and "model:" in result.stdout
    cfg = yaml.safe_load(result.stdout)
    assert cfg["epochs"] == 7
    assert cfg["model"]["name"] == "resnet" and "depth" in cfg["model"]
    assert cfg["dataset"]["name"] == "digits"  # the default
    assert "hydra" not in cfg
    assert not (result.cwd / "outputs").exists()  # printing the config runs nothing


def test_installed_imgcls_entry_point(tmp_path):
    script = Path(sys.executable).with_name("imgcls")
    if not script.exists():
        pytest.skip("no imgcls script next to this Python")
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "predict" in proc.stdout


# ============================================================================================ 11. learnability
def test_synthetic_dataset_is_learned_with_the_default_model(tmp_path):
    # Default model (simple_cnn 32-64-128), optimizer and schedule; a reduced budget (~15 s on 2 CPU cores).
    # epochs=3 with 1000 samples lands at ~0.945 with seed 0: one more epoch leaves a clear margin (~0.99).
    result = run_cli("train", "dataset=synthetic", "epochs=4", "dataset.num_samples=1000",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_ok(result)
    summary = read_json(result.run_dir / "summary.json")
    assert summary["status"] == "completed"
    assert summary["test_accuracy"] >= 0.95, summary


def test_the_default_train_command_reaches_97_percent_on_digits(tmp_path):
    """The README's main job, with no override at all: simple_cnn on the real digits."""
    result = run_cli("train", cwd=tmp_path)
    assert_ok(result)
    assert result.run_dir.parent == tmp_path / "outputs" / "train"
    assert result.run_dir.name.endswith("_simple_cnn_digits")
    summary = read_json(result.run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["test_accuracy"] >= 0.97, summary
    assert "test accuracy" in result.stdout  # the final results table
