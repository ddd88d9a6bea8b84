"""`imgcls lr_find`: the range test on digits suggests an lr that trains to >= 90% in 2 epochs, below the lr where
the loss diverged (training there fails); its files, its mistakes, and the steepest-descent rule."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import assert_ok, assert_user_error, csv_header, read_csv, read_json, run_in_one_process
from imgcls_cli.engine.lr_find import RangeSpec, steepest

TWO_EPOCHS = ["dataset=digits", "epochs=2", "batch_size=32"]


@pytest.fixture(scope="module")
def found(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("lr_find")
    return run_in_one_process({
        # Up to lr 1000: with Adam and batch norm the loss at lr 10 hovers near chance's (about 3x its lowest,
        # how far depends on the floats of the machine); far beyond it, it diverges on every machine.
        "find": (["lr_find", "dataset=digits", "lr_find.max_lr=1000"], base),
        "range": (["lr_find", "lr_find.min_lr=1", "lr_find.max_lr=0.1"], base / "mistakes"),
        "init": (["lr_find", "init=best.pt"], base / "mistakes"),
        "cfg": (["lr_find", "model=resnet", "optimizer=sgd", "--cfg", "job"], base / "mistakes"),
    }, timeout=900)


@pytest.fixture(scope="module")
def trained(found, tmp_path_factory) -> dict:
    """2 epochs at the suggestion, and at the lr where the range test diverged."""
    summary = read_json(found["find"].run_dir / "lr_find.json")
    base = tmp_path_factory.mktemp("lr_find_train")
    return run_in_one_process({
        "suggested": (["train", *TWO_EPOCHS, f"optimizer.lr={summary['suggested_lr']}"], base),
        "diverging": (["train", *TWO_EPOCHS, f"optimizer.lr={summary['last_lr']}"], base),
    }, timeout=900)


def test_lr_find_writes_its_csv_plot_and_suggestion_in_its_own_run_dir(found):
    result = found["find"]
    assert_ok(result)
    run_dir = result.run_dir
    assert run_dir.parent.name == "lr_find" and run_dir.parent.parent.name == "outputs"
    assert {"lr_find.csv", "lr_find.png", "lr_find.json", "config.yaml"} <= {p.name for p in run_dir.iterdir()}
    assert not (result.cwd / "outputs" / "train").exists()  # no training run is made or changed
    assert csv_header(run_dir / "lr_find.csv") == ["step", "lr", "loss", "smoothed_loss"]
    rows = read_csv(run_dir / "lr_find.csv")
    lrs = np.array([float(r["lr"]) for r in rows])
    assert lrs[0] == pytest.approx(1e-7)
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1000 / 1e-7) ** (1 / 99), rtol=1e-4)  # exponential, 100 steps
    summary = read_json(run_dir / "lr_find.json")
    assert summary["diverged"] and len(rows) < 100  # stopped once the loss diverged
    smoothed = [float(r["smoothed_loss"]) for r in rows]
    assert smoothed[-1] > 4 * min(smoothed)
    assert f"optimizer.lr={summary['suggested_lr']:.3g}" in result.stdout
    assert 1e-5 < summary["suggested_lr"] < summary["last_lr"]


def test_the_suggestion_trains_to_90_percent_where_the_diverging_end_fails(trained):
    good, bad = trained["suggested"], trained["diverging"]
    assert_ok(good)
    summary = read_json(good.run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["test_accuracy"] >= 0.90, summary
    failed = read_json(bad.run_dir / "summary.json") if bad.returncode in (0, 2) else {}
    assert failed.get("status") == "diverged" or (failed.get("test_accuracy") or 0) < 0.5, (failed, bad.describe())


def test_lr_find_mistakes_are_one_line(found):
    assert_user_error(found["range"], "min_lr < max_lr")
    assert_user_error(found["init"], "best.pt")  # a missing checkpoint, as train says
    assert_ok(found["cfg"])
    assert "name: resnet" in found["cfg"].stdout and "min_lr" in found["cfg"].stdout


def test_the_lr_grows_by_the_same_factor_each_step():
    spec = RangeSpec(min_lr=1e-4, max_lr=1.0, steps=5)
    assert [spec.lr(i) for i in range(5)] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def test_steepest_descent_is_the_most_negative_slope_against_log_lr_before_the_minimum():
    lrs = list(np.logspace(-6, 0, 61))
    loss = [2 - math.tanh(2 * (math.log10(lr) + 3)) + (0.5 * (math.log10(lr) + 1) ** 2 if lr > 0.1 else 0)
            for lr in lrs]
    assert lrs[steepest(lrs, loss)] == pytest.approx(1e-3)
    assert steepest(lrs, list(np.linspace(1, 2, 61))) is None  # a loss that only rises has no suggestion
