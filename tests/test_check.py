"""imgcls check in-process: the inventory, unreadable files, exact and near duplicates, leakage and label conflicts
planted in a small image folder; clean.csv that the csv dataset trains on; fail_on; label errors planted in
synthetic data ranked high by the out-of-fold predictions; check.oof reused, and refused when stale."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import compose_plain, write_png
from imgcls_cli.errors import UserError

pytest.importorskip("imagehash")
pytest.importorskip("cleanlab")


def check_spec(*overrides: str):
    """The CheckSpec of conf/check.yaml with overrides, as `imgcls check` parses it."""
    from imgcls_cli.specs.check import CheckSpec

    return CheckSpec.parse(compose_plain("check", *overrides))


def run(run_dir: Path, *overrides: str) -> dict:
    from imgcls_cli.check.run import run_check

    run_dir.mkdir(parents=True, exist_ok=True)
    return run_check(check_spec(*overrides), run_dir)


def issues(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "issues.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def near_copy(image: np.ndarray) -> np.ndarray:
    """The same picture, not the same pixels: 1 pixel cropped off each side, resized to 36x36, brightened by 20,
    JPEG at quality 75."""
    cropped = cv2.resize(image[1:-1, 1:-1], (36, 36), interpolation=cv2.INTER_LINEAR)
    bright = np.clip(cropped.astype(int) + 20, 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", bright, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def picture(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A random smooth gray picture: blobs of several sizes (no two alike)."""
    noise = rng.random((size // 4, size // 4)).astype(np.float32)
    big = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.random((size // 2, size // 2)).astype(np.float32), (size, size))
    return np.clip((0.7 * big + 0.3 * fine) * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """train/ and test/ class folders of distinct pictures, with planted findings."""
    root = tmp_path_factory.mktemp("planted") / "data"
    rng = np.random.default_rng(0)
    made = {}
    for split, count in (("train", 12), ("test", 4)):
        for c in ("cat", "dog", "fox"):
            for i in range(count):
                made[f"{split}/{c}/{i}.png"] = write_png(root / split / c / f"{i}.png", picture(rng)[None])
    shutil.copy(made["train/cat/0.png"], root / "train/cat/0_again.png")  # exact, same split
    shutil.copy(made["train/dog/1.png"], root / "test/dog/leak.png")  # exact, train -> test
    cv2.imwrite(str(root / "test/fox/near_leak.jpg"), near_copy(cv2.imread(str(made["train/fox/2.png"]), 0)))
    cv2.imwrite(str(root / "train/fox/near.jpg"), near_copy(cv2.imread(str(made["train/fox/3.png"]), 0)))
    shutil.copy(made["train/cat/4.png"], root / "train/dog/relabelled.png")  # one image, two labels
    (root / "train/cat/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    run_dir = root.parent / "run"
    result = run(run_dir, "dataset=imagefolder", f"dataset.root={root}", "write_clean=true")
    return {"root": root, "run": run_dir, "result": result, "issues": issues(run_dir)}


def found(rows: list[dict[str, str]], kind: str) -> set[tuple[str, str]]:
    return {(r["path"], r["related"]) for r in rows if r["kind"] == kind}


def test_planted_duplicates_leaks_and_conflicts_are_each_found_once_with_their_pair(planted):
    rows = planted["issues"]
    assert found(rows, "duplicate") == {("train/cat/0_again.png", "train/cat/0.png")}
    assert found(rows, "leakage") == {("test/dog/leak.png", "train/dog/1.png"),
                                      ("test/fox/near_leak.jpg", "train/fox/2.png")}
    assert found(rows, "near_duplicate") == {("train/fox/near.jpg", "train/fox/3.png")}
    assert found(rows, "label_conflict") == {("train/dog/relabelled.png", "train/cat/4.png")}
    assert {(r["path"], r["reason"]) for r in rows if r["kind"] == "unreadable"} == {
        ("train/cat/broken.png", "not a decodable image")}
    near = next(r for r in rows if r["path"] == "test/fox/near_leak.jpg")
    assert near["match"] == "near" and 0.995 <= float(near["score"]) <= 1
    assert near["split"] == "test" and near["related_split"] == "train" and near["class"] == "fox"


def test_check_json_counts_the_inventory_and_every_kind(planted):
    result = json.loads((planted["run"] / "check.json").read_text())
    assert result["images"] == 12 * 3 + 4 * 3 + 6 and result["unreadable"] == 1
    kinds = {"duplicate": 1, "near_duplicate": 1, "leakage": 2, "label_conflict": 1, "unreadable": 1, "label_issue": 0}
    assert {k: result["findings"][k] for k in kinds} == kinds
    assert result["findings"]["leakage_total"] == 2 and result["findings"]["duplicates_total"] == 3
    cat = next(r for r in result["per_class"] if r["class"] == "cat")
    assert cat["train"] + cat["val"] == 13 and cat["test"] == 4  # 0_again.png counts, broken.png does not; val is
    assert cat["val"] == 1  # carved from train/ as training carves it (dataset.val_fraction=0.1)
    assert result["imbalance_ratio"] == pytest.approx(18 / 17, abs=1e-3)  # dog and fox have a planted file more
    assert dict(map(tuple, result["formats"])) == {"PNG": 51, "JPEG": 2}
    assert dict(map(tuple, result["sizes"])) == {"32x32": 51, "36x36": 2}
    assert dict(map(tuple, result["modes"])) == {"L": 53}
    assert result["failed_on"] == []


def test_clean_csv_leaves_out_every_flagged_file_and_the_csv_dataset_trains_on_it(planted):
    from imgcls_cli.data.datasets import load_dataset

    clean = planted["run"] / "clean.csv"
    with open(clean, newline="") as f:
        rows = list(csv.DictReader(f))
    names = {str(Path(r["path"]).relative_to(planted["root"])) for r in rows}
    flagged = {"train/cat/0_again.png", "test/dog/leak.png", "test/fox/near_leak.jpg", "train/fox/near.jpg",
               "train/dog/relabelled.png", "train/cat/4.png", "train/cat/broken.png"}
    assert len(rows) == 53 - 6 and not names & flagged
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    bundle = load_dataset({"name": "csv", "file": str(clean), "image_size": 16, "channels": 1,
                           "val_fraction": 0.1, "test_fraction": 0.1}, seed=0)
    assert len(bundle.splits["test"]) == 14 - 2 and len(bundle.skipped) == 0
    assert sum(len(s) for s in bundle.splits.values()) == 47
    assert (planted["root"] / "train/cat/broken.png").exists()  # the user's files are left as they were


def test_report_html_shows_the_inventory_and_a_thumbnail_of_each_image_of_a_finding(planted):
    page = (planted["run"] / "report.html").read_text()
    assert page.count('<img src="data:image/jpeg;base64,') == 2 * 5  # a pair for each of 5 findings
    assert page.count('<span class="missing">') == 1  # the unreadable file
    for anchor in ("inventory", "duplicate", "near-duplicate", "leakage", "label-conflict", "unreadable"):
        assert f'<section id="{anchor}">' in page
    assert "http://" not in page and "https://" not in page.replace("Content-Security-Policy", "")


def test_fail_on_names_the_kinds_found_and_not_the_others(planted, tmp_path):
    result = run(tmp_path / "r", "dataset=imagefolder", f"dataset.root={planted['root']}",
                 "fail_on=[leakage,label_issues]")
    assert result["failed_on"] == ["leakage", "label_issues"]  # label_issues: the image under two labels
    result = run(tmp_path / "s", "dataset=imagefolder", f"dataset.root={planted['root'] / 'test'}",
                 "dataset.val_fraction=0", "dataset.test_fraction=0", "fail_on=[leakage,duplicates,label_issues]")
    assert result["failed_on"] == []


def test_split_carving_matches_training_and_the_arrays_of_digits_are_listed_by_index(tmp_path):
    from imgcls_cli.check.listing import list_dataset
    from imgcls_cli.data.datasets import load_dataset

    spec = check_spec("dataset=digits", "seed=3")
    items = list_dataset(spec)
    bundle = load_dataset(spec.train.config["dataset"], seed=3)
    for split in ("train", "val", "test"):
        assert sorted(bundle.splits[split].ids) == sorted(i for i, s in zip(items.ids, items.splits) if s == split)
    assert items.id_column == "index" and items.paths is None


@pytest.mark.parametrize("overrides, message", [
    (["fail_on=[leaks]"], "fail_on names 'leaks'"),
    (["check.folds=1"], "check.folds must be a whole number in [2, 100]"),
    (["write_clean=true"], "write_clean=true writes a CSV of image files; dataset 'digits' has no files"),
    (["check.near_similarity=1.5"], "check.near_similarity must be in (0, 1]"),
    (["epochs=0"], "epochs must be a whole number >= 1"),
])
def test_settings_that_check_refuses(overrides, message):
    with pytest.raises(UserError, match=None) as error:
        check_spec("dataset=digits", *overrides)
    assert message in str(error.value)


def test_a_class_with_fewer_images_than_folds_is_one_line_naming_it(tmp_path):
    root = tmp_path / "few"
    rng = np.random.default_rng(1)
    for c, n in (("big", 8), ("tiny", 2)):
        for i in range(n):
            write_png(root / c / f"{i}.png", picture(rng)[None])
    with pytest.raises(UserError, match="class 'tiny' has 2; lower check.folds"):
        run(tmp_path / "r", "dataset=imagefolder", f"dataset.root={root}", "labels=true", "check.folds=3")


# --------------------------------------------------------------------------------------------------- label errors
@pytest.fixture(scope="module")
def flipped(tmp_path_factory) -> dict:
    """400 synthetic textures of 4 classes as class folders, 12 of them filed under a wrong class; checked with
    labels=true (3 folds of 3 epochs of simple_cnn)."""
    from imgcls_cli.data.builders import synthetic

    source = synthetic(image_size=16, channels=1, seed=0, num_samples=400, num_classes=4)
    rng = np.random.default_rng(5)
    flips = set(rng.choice(len(source.labels), 12, replace=False).tolist())
    root = tmp_path_factory.mktemp("flipped") / "data"
    wrong = set()
    for i, (image, label) in enumerate(zip(source.images, source.labels)):
        given = (label + 1 + i % 3) % 4 if i in flips else label
        path = write_png(root / source.classes[given] / f"{i}.png", image)
        if i in flips:
            wrong.add(str(path.relative_to(root)))
    run_dir = root.parent / "run"
    overrides = ["dataset=imagefolder", f"dataset.root={root}", "dataset.val_fraction=0", "dataset.test_fraction=0",
                 "labels=true", "check.folds=3", "epochs=3", "device=cpu"]
    result = run(run_dir, *overrides)
    return {"wrong": wrong, "run": run_dir, "overrides": overrides, "result": result, "issues": issues(run_dir)}


def test_planted_label_flips_rank_first_with_their_true_class_suggested(flipped):
    ranked = [r for r in flipped["issues"] if r["kind"] == "label_issue"]
    top = [r["path"] for r in ranked[:12]]
    assert len(set(top) & flipped["wrong"]) >= 9, ranked[:15]
    scores = [float(r["score"]) for r in ranked]
    assert scores == sorted(scores)  # most likely wrong first
    right = [r for r in ranked if r["path"] in flipped["wrong"]]
    assert sum(r["suggested"] != r["class"] for r in right) == len(right)
    probs = np.load(flipped["run"] / "oof_probs.npy")
    assert probs.shape == (400, 4) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_check_oof_reuses_the_probabilities_and_refuses_them_when_stale(flipped, tmp_path):
    result = run(tmp_path / "again", *flipped["overrides"], f"check.oof={flipped['run']}")
    assert result["findings"]["label_issue"] == flipped["result"]["findings"]["label_issue"]
    assert not (tmp_path / "again" / "folds").exists()  # nothing trained
    assert issues(tmp_path / "again") == flipped["issues"]
    with pytest.raises(UserError, match="stale"):
        run(tmp_path / "stale", *flipped["overrides"], "epochs=4", f"check.oof={flipped['run']}")
