"""eval's answers can be trusted: the classes it scores are the checkpoint's (matched by name), it never scores
an image the checkpoint learned from, it says how many of the run's images it could not read, and bad
topk/batch_size values are one line.

Two tiny training runs (digits, and an image folder) are made once; the evals run in-process (run_eval is what
`imgcls eval` calls) except the few that check the command's one-line errors.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import (assert_ok, assert_user_error, read_csv, read_json, run_in_one_process,
                      split_ids, synthetic_images, write_png)
from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.engine.inference import dataset_for_checkpoint, run_eval
from imgcls_cli.errors import UserError
from imgcls_cli.paths import CONF_DIR
from imgcls_cli.specs.eval import EvalSpec

FOLDER_CLASSES = ["ant", "bee", "cat"]
FOLDER_PER_CLASS = 12


def group(name: str, **keys) -> dict:
    """conf/dataset/<name>.yaml with keys set, as `imgcls eval dataset=<name> dataset.KEY=...` composes it."""
    cfg = yaml.safe_load((CONF_DIR / "dataset" / f"{name}.yaml").read_text())
    return {**cfg, **keys}


def eval_spec(dataset_cfg=None, dataset_keys=(), **keys) -> EvalSpec:
    """The spec `imgcls eval` parses from its config: dataset=... (dataset_cfg), the dataset.* keys set on the
    command line (dataset_keys) and eval's own keys, on the CPU."""
    return EvalSpec.parse({"device": "cpu", "num_workers": 0, "dataset": dataset_cfg, **keys}, dataset_keys)


def evaluate(checkpoint, run_dir: Path, **kwargs) -> dict:
    """`imgcls eval` in this process: its metrics.json."""
    checkpoint = str(checkpoint) if not isinstance(checkpoint, list) else list(map(str, checkpoint))
    run_eval(eval_spec(checkpoint=checkpoint, **kwargs), run_dir)
    return read_json(run_dir / "metrics.json")


def make_folder(root: Path) -> Path:
    """root/<class>/<i>.png: FOLDER_PER_CLASS synthetic 16x16 images per class (lossless PNG)."""
    images, labels = synthetic_images(FOLDER_PER_CLASS * len(FOLDER_CLASSES), len(FOLDER_CLASSES), 16, 3, seed=3)
    counts = dict.fromkeys(range(len(FOLDER_CLASSES)), 0)
    for image, label in zip(images, labels):
        write_png(root / FOLDER_CLASSES[label] / f"{counts[label]}.png", image)
        counts[label] += 1
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained_run):
    """A digits run (the README's quick run, smaller), an image-folder run, and the CLI's one-line errors."""
    base = tmp_path_factory.mktemp("trust")
    folder = make_folder(base / "folder")
    small = ["model.widths=[8,16,16]", "model.hidden=32", "epochs=1"]
    results = run_in_one_process({
        "digits": (["train", "dataset=digits", "dataset.max_train_samples=200", *small,
                    f"hydra.run.dir={base / 'digits'}"], base),
        "folder": (["train", "dataset=imagefolder", f"dataset.root={folder}", "dataset.image_size=16",
                    "dataset.channels=3", "dataset.val_fraction=0.2", "dataset.test_fraction=0.25", "batch_size=8",
                    *small, f"hydra.run.dir={base / 'folder_run'}"], base),
        "topk0": (["eval", f"checkpoint={trained_run.best}", "topk=0", f"hydra.run.dir={base / 'topk0'}"], base),
        "classes": (["eval", f"checkpoint={trained_run.best}", "dataset=digits", "dataset.max_eval_samples=20",
                     f"hydra.run.dir={base / 'classes'}"], base),
    })
    return base, results


@pytest.fixture(scope="module")
def digits_run(runs) -> Path:
    assert_ok(runs[1]["digits"])
    return runs[0] / "digits"


@pytest.fixture(scope="module")
def folder_run(runs) -> Path:
    assert_ok(runs[1]["folder"])
    return runs[0] / "folder_run"


# ------------------------------------------------------------------------------------------------ 1. classes
def test_a_dataset_with_other_classes_is_refused_in_one_line(digits_run, tmp_path):
    """digits (0-9) scored on the synthetic patterns: refused, naming differing classes on both sides."""
    with pytest.raises(UserError) as err:
        evaluate(digits_run / "checkpoints" / "best.pt", tmp_path, dataset_cfg=group("synthetic"))
    message = str(err.value)
    assert "other classes" in message and "0, 1, 2" in message
    assert "horizontal" in message and "\n" not in message
    assert not (tmp_path / "metrics.json").exists()


def test_the_cli_refuses_other_classes_in_one_line(runs):
    """The same through the command: exit 2, one line (the synthetic checkpoint on digits)."""
    assert_user_error(runs[1]["classes"], "other classes", "horizontal")


def test_a_folder_with_the_classes_in_another_order_scores_the_same(trained_run, tmp_path):
    """The synthetic run's test images as a class folder (sorted names: another class order than the run's):
    the same accuracy and the same prediction per image as the run's own test evaluation."""
    ckpt = load_checkpoint(trained_run.best)
    bundle = load_dataset(dataset_for_checkpoint(ckpt, None, [], trained_run.best), int(ckpt["config"]["seed"]))
    assert sorted(bundle.classes) != bundle.classes  # the folder's order differs
    test, train = bundle.splits["test"], bundle.splits["train"]
    root = tmp_path / "folder"
    for split, data, count in (("test", test, len(test)), ("train", train, 10)):
        for i in range(count):
            write_png(root / split / bundle.classes[int(data.labels[i])] / f"{data.ids[i]}.png",
                      data.images[i].numpy())
    metrics = evaluate(trained_run.best, tmp_path / "run",
                       dataset_cfg=group("imagefolder", root=str(root), val_fraction=0))
    ours = read_json(trained_run.run_dir / "eval" / "metrics.json")
    assert metrics["num_samples"] == len(test)
    assert metrics["accuracy"] == pytest.approx(ours["accuracy"], abs=1e-9)
    theirs = {r["index"]: r for r in read_csv(trained_run.run_dir / "eval" / "predictions.csv")}
    for row in read_csv(tmp_path / "run" / "predictions.csv"):
        index = Path(row["path"]).stem
        assert (row["label"], row["target"]) == (theirs[index]["label"], theirs[index]["target"])
        assert float(row["probability"]) == pytest.approx(float(theirs[index]["probability"]), abs=1e-5)


def test_ensemble_members_with_reordered_classes_are_matched_by_name(trained_run, tmp_path):
    """A member whose classes (and output units) are the first's in another order: the ensemble's
    predictions are the first member's own."""
    import torch

    from imgcls_cli.engine.inference import model_from_checkpoint
    from imgcls_cli.models.heads import head_name

    ckpt = load_checkpoint(trained_run.best)
    order = [3, 0, 4, 1, 2]
    model = model_from_checkpoint(ckpt, torch.device("cpu"))
    head = head_name(model, len(ckpt["classes"]))
    state = dict(ckpt["state_dict"])
    for key in (f"{head}.weight", f"{head}.bias"):
        state[key] = state[key][order]
    other = {**{k: v for k, v in ckpt.items() if k not in ("format", "format_version")}, "state_dict": state,
             "classes": [ckpt["classes"][i] for i in order]}
    run = tmp_path / "other_run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(other, run / "checkpoints" / "best.pt")
    shutil.copy(trained_run.run_dir / "splits.csv", run / "splits.csv")
    metrics = evaluate([trained_run.best, run / "checkpoints" / "best.pt"], tmp_path / "ens")
    single = read_json(trained_run.run_dir / "eval" / "metrics.json")
    assert metrics["accuracy"] == pytest.approx(single["accuracy"], abs=1e-9)
    assert metrics["loss"] == pytest.approx(single["loss"], abs=1e-5)


# ------------------------------------------------------------------------------------------------ 2. seen images
def test_another_test_fraction_leaves_out_what_the_checkpoint_learned_from(digits_run, tmp_path, caplog):
    """The README's `eval dataset=digits dataset.test_fraction=0.3`: no scored image is in the run's train or val
    split, and the images left out are counted (metrics.json and a log line)."""
    best = digits_run / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(best)
    with caplog.at_level(logging.INFO, logger="imgcls"):
        metrics = evaluate(best, tmp_path, dataset_cfg=group("digits", test_fraction=0.3),
                           dataset_keys=["test_fraction"])
    run = split_ids(digits_run)
    seen = set(run["train"]) | set(run["val"])
    scored = [r["index"] for r in read_csv(tmp_path / "predictions.csv")]
    assert scored and not set(scored) & seen
    wider = load_dataset({**group("digits", test_fraction=0.3), "image_size": 32, "channels": 1},
                         int(ckpt["config"]["seed"])).splits["test"].ids
    expected = len(set(wider) & seen)
    assert expected > 100  # the attack: most of the wider split's extra images were trained on
    assert metrics["excluded_seen"] == expected and metrics["num_samples"] == len(wider) - expected
    assert sorted(scored, key=int) == sorted(set(wider) - seen, key=int)
    assert any(f"left out {expected} of {len(wider)} test images" in r.getMessage() for r in caplog.records)


def test_another_val_fraction_on_split_val_leaves_out_only_train_images(digits_run, tmp_path):
    best = digits_run / "checkpoints" / "best.pt"
    metrics = evaluate(best, tmp_path, dataset_cfg=group("digits", val_fraction=0.5), dataset_keys=["val_fraction"],
                       split="val")
    run = split_ids(digits_run)
    scored = {r["index"] for r in read_csv(tmp_path / "predictions.csv")}
    assert not scored & set(run["train"]) and scored & set(run["val"])  # val images stay: val is scored
    assert metrics["excluded_seen"] > 0


def test_the_runs_own_split_excludes_nothing(digits_run, tmp_path):
    metrics = evaluate(digits_run / "checkpoints" / "best.pt", tmp_path)
    assert metrics["excluded_seen"] == 0 and metrics["missing_files"] == 0
    assert metrics["num_samples"] == len(split_ids(digits_run)["test"])


def test_without_the_runs_splits_another_split_is_refused(digits_run, tmp_path):
    """A checkpoint moved out of its run: its own split is made again from its settings, another is refused."""
    moved = tmp_path / "models" / "best.pt"
    moved.parent.mkdir(parents=True)
    shutil.copy(digits_run / "checkpoints" / "best.pt", moved)
    with pytest.raises(UserError, match="cannot tell which images .* was trained on: its run's splits.csv"):
        evaluate(moved, tmp_path / "a", dataset_cfg=group("digits", test_fraction=0.3), dataset_keys=["test_fraction"])
    metrics = evaluate(moved, tmp_path / "b")
    scored = {r["index"] for r in read_csv(tmp_path / "b" / "predictions.csv")}
    assert scored == set(split_ids(digits_run)["test"]) and metrics["excluded_seen"] == 0


def test_an_ensemble_leaves_out_what_any_member_learned_from(digits_run, tmp_path):
    """A second member whose run trained on half of the first run's test images: those are left out for both."""
    run = split_ids(digits_run)
    other = tmp_path / "other_run"
    (other / "checkpoints").mkdir(parents=True)
    shutil.copy(digits_run / "checkpoints" / "best.pt", other / "checkpoints" / "best.pt")
    moved = set(run["test"][::2])
    rows = [f"{i},{'train' if i in moved else s}" for s in ("train", "val", "test") for i in run[s]]
    (other / "splits.csv").write_text("index,split\n" + "\n".join(rows) + "\n")
    metrics = evaluate([digits_run / "checkpoints" / "best.pt", other / "checkpoints" / "best.pt"], tmp_path / "ens")
    scored = {r["index"] for r in read_csv(tmp_path / "ens" / "predictions.csv")}
    assert scored == set(run["test"]) - moved and metrics["excluded_seen"] == len(moved)
    for member in ("0", "1"):
        assert len(read_csv(tmp_path / "ens" / "members" / member / "predictions.csv")) == len(scored)


def test_an_image_folder_split_again_leaves_out_the_runs_files_by_path(folder_run, tmp_path):
    """Path ids: the run's train and val files (by their real paths) are never scored under another split."""
    metrics = evaluate(folder_run / "checkpoints" / "best.pt", tmp_path,
                       dataset_cfg={"name": "imagefolder", "test_fraction": 0.5}, dataset_keys=["test_fraction"])
    run = split_ids(folder_run)
    scored = {r["path"] for r in read_csv(tmp_path / "predictions.csv")}
    assert scored and not scored & (set(run["train"]) | set(run["val"]))
    assert metrics["excluded_seen"] > 0 and metrics["num_samples"] == len(scored)


def test_a_damaged_splits_file_beside_the_checkpoint_is_one_line(digits_run, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(digits_run / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    (run / "splits.csv").write_text("id;where\n1;train\n")
    with pytest.raises(UserError, match="is not a training run's splits file"):
        evaluate(run / "checkpoints" / "best.pt", tmp_path / "eval")


# ------------------------------------------------------------------------------------------------ 6. unread files
def test_deleted_test_files_are_counted_and_listed(folder_run, tmp_path, caplog):
    test = split_ids(folder_run)["test"]
    root = Path(load_checkpoint(folder_run / "checkpoints" / "best.pt")["config"]["dataset"]["root"])
    gone = test[:2]
    backup = tmp_path / "backup"
    for i in gone:
        (backup / i).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / i, backup / i)
    try:
        with caplog.at_level(logging.WARNING, logger="imgcls"):
            metrics = evaluate(folder_run / "checkpoints" / "best.pt", tmp_path / "run")
    finally:
        for i in gone:
            shutil.move(backup / i, root / i)
    assert metrics["num_samples"] == len(test) - 2 and metrics["missing_files"] == 2
    warning = f"2 of {len(test)} test images of the run could not be read (missing or undecodable): listed in " \
              "skipped_files.txt"
    assert warning in [r.getMessage() for r in caplog.records]
    listed = (tmp_path / "run" / "skipped_files.txt").read_text()
    assert all(i in listed for i in gone)


def test_an_undecodable_test_file_is_counted_and_none_readable_is_one_line(folder_run, tmp_path):
    test = split_ids(folder_run)["test"]
    root = Path(load_checkpoint(folder_run / "checkpoints" / "best.pt")["config"]["dataset"]["root"])
    saved = {i: (root / i).read_bytes() for i in test}
    try:
        (root / test[0]).write_bytes(b"not an image any more")
        metrics = evaluate(folder_run / "checkpoints" / "best.pt", tmp_path / "one")
        assert metrics["missing_files"] == 1 and metrics["num_samples"] == len(test) - 1
        for i in test:
            (root / i).unlink()
        with pytest.raises(UserError, match=f"none of the {len(test)} test images of the run could be read"):
            evaluate(folder_run / "checkpoints" / "best.pt", tmp_path / "none")
    finally:
        for i, data in saved.items():
            (root / i).write_bytes(data)
    assert len((tmp_path / "none" / "skipped_files.txt").read_text().splitlines()) == len(test)


def test_a_test_file_that_no_longer_decodes_while_streaming_is_counted(folder_run, tmp_path):
    """Images read a batch at a time (dataset.in_memory=false): a file found undecodable then is counted too."""
    test = split_ids(folder_run)["test"]
    root = Path(load_checkpoint(folder_run / "checkpoints" / "best.pt")["config"]["dataset"]["root"])
    saved = (root / test[-1]).read_bytes()
    try:
        (root / test[-1]).write_bytes(b"\x89PNG\r\n\x1a\n but nothing after")
        metrics = evaluate(folder_run / "checkpoints" / "best.pt", tmp_path,
                           dataset_cfg={"name": "imagefolder", "in_memory": False}, dataset_keys=["in_memory"])
    finally:
        (root / test[-1]).write_bytes(saved)
    assert metrics["missing_files"] == 1 and metrics["num_samples"] == len(test) - 1
    assert test[-1] in (tmp_path / "skipped_files.txt").read_text()


def test_sweep_eval_checks_each_jobs_classes_and_leaves_out_each_jobs_seen_images(digits_run, tmp_path):
    """A sweep folder of two jobs (each a copy of the digits run): another test_fraction leaves out each job's
    seen images (its own splits.csv); another dataset's classes are refused."""
    from imgcls_cli.engine.inference import run_sweep_eval

    sweep = tmp_path / "sweep"
    for job in ("0_a", "1_b"):
        (sweep / job / "checkpoints").mkdir(parents=True)
        shutil.copy(digits_run / "checkpoints" / "best.pt", sweep / job / "checkpoints" / "best.pt")
        shutil.copy(digits_run / "splits.csv", sweep / job / "splits.csv")
    board = run_sweep_eval(eval_spec(group("digits", test_fraction=0.3), ["test_fraction"], sweep=str(sweep)),
                           tmp_path / "board")
    seen = set(split_ids(digits_run)["train"]) | set(split_ids(digits_run)["val"])
    for row in board:
        assert row["excluded_seen"] > 100
        scored = {r["index"] for r in read_csv(tmp_path / "board" / f"{row['job']}_{'ab'[int(row['job'])]}"
                                               / "predictions.csv")}
        assert scored and not scored & seen
    with pytest.raises(UserError, match="other classes"):
        run_sweep_eval(eval_spec(group("synthetic"), sweep=str(sweep)), tmp_path / "other")


# ------------------------------------------------------------------------------------------------ 13. values
@pytest.mark.parametrize("key,value", [("topk", 0), ("topk", -1), ("topk", 2.5), ("topk", "five"),
                                       ("batch_size", 0), ("batch_size", -8), ("batch_size", 10 ** 20),
                                       ("batch_size", 1.5), ("batch_size", "big")])
def test_bad_topk_and_batch_size_are_refused_before_any_work(key, value, tmp_path):
    with pytest.raises(UserError, match=f"^{key} must be "):
        evaluate(tmp_path / "never_read.pt", tmp_path / "run", **{key: value})
    assert not (tmp_path / "run").exists()


def test_the_cli_says_topk_0_in_one_line(runs):
    assert_user_error(runs[1]["topk0"], "topk must be a whole number >= 1, not 0")
