"""The data side of task=multilabel: label sets read from a CSV (a `labels` column of names joined by `|`, or one
0/1 column per label), iterative stratification for splits, subsets and folds, the fashion_mnist_mosaic dataset
checked against the Fashion-MNIST items in its cells, and the one-line errors when data and task disagree."""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import assert_user_error, run_in_one_process
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.data.loader import make_loader
from imgcls_cli.data.mix import Mixer
from imgcls_cli.data.splits import iterative_stratification, stratified_folds, stratified_split
from imgcls_cli.errors import UserError
from imgcls_cli.paths import CONF_DIR

NAMES = ["bag", "cat", "dog", "hat"]  # hat is rare: 1 image in 12
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION_DIR.is_dir(),
                                   reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")


# ============================================================================================ CSV of label sets
def label_set(i: int) -> list[str]:
    """The label set of image i: every pattern of bag/cat/dog (the empty set too), hat now and then."""
    return [n for b, n in enumerate(NAMES[:3]) if (i >> b) & 1] + (["hat"] if i % 12 == 5 else [])


def write_images(folder: Path, n: int) -> list[str]:
    """n distinct 8x8 gray PNGs; their paths relative to folder's parent."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (8, 8), dtype=np.uint8))
    return [f"{folder.name}/{i}.png" for i in range(n)]


def csv_cfg(path: Path, **extra) -> dict:
    return {"name": "csv", "file": str(path), "image_size": 8, "channels": 1, "val_fraction": 0.2,
            "test_fraction": 0.2, **extra}


@pytest.fixture(scope="module")
def label_csvs(tmp_path_factory) -> dict[str, Path]:
    """The same 96 images and label sets twice: as `labels` cells (with stray spaces) and as 0/1 columns."""
    root = tmp_path_factory.mktemp("labels")
    paths = write_images(root / "img", 96)
    cells = ["".join(f" {n} |" for n in label_set(i)).rstrip("|") for i in range(96)]
    (root / "cells.csv").write_text("path,labels\n" + "".join(f"{p},{c}\n" for p, c in zip(paths, cells)))
    words = [("0", "1"), ("false", "true"), ("0", "TRUE")]  # any spelling of 0/1 in any row
    rows = [",".join(words[i % 3][n in label_set(i)] for n in ["hat", "dog", "cat", "bag"]) for i in range(96)]
    (root / "columns.csv").write_text("path,hat,dog,cat,bag,notes\n" +
                                      "".join(f"{p},{r},x\n" for p, r in zip(paths, rows)))
    return {"cells": root / "cells.csv", "columns": root / "columns.csv"}


def expected_rows(split) -> np.ndarray:
    return np.array([[n in label_set(int(Path(i).stem)) for n in NAMES] for i in split.ids], dtype=np.float32)


def test_label_cells_and_label_columns_give_the_same_multi_hot_rows(label_csvs):
    cells = load_dataset(csv_cfg(label_csvs["cells"]), seed=0, task="multilabel")
    columns = load_dataset(csv_cfg(label_csvs["columns"], label_columns=["hat", "dog", "cat", "bag"]), seed=0,
                           task="multilabel")
    assert cells.classes == columns.classes == NAMES and cells.multilabel and columns.multilabel
    for split in ("train", "val", "test"):
        a, b = cells.splits[split], columns.splits[split]
        assert a.multilabel and a.labels.dtype == torch.float32 and a.labels.shape == (len(a), 4)
        assert a.ids == b.ids and torch.equal(a.labels, b.labels)
        assert np.array_equal(a.labels.numpy(), expected_rows(a))
    assert sum(len(s) for s in cells.splits.values()) == 96
    empty = [i for s in cells.splits.values() for i, row in zip(s.ids, s.labels) if not row.any()]
    assert sorted(empty, key=lambda p: int(Path(p).stem)) == [f"img/{i}.png" for i in range(96) if not label_set(i)]


def test_a_split_column_names_the_splits_and_every_file_is_read_once(tmp_path, caplog):
    paths = write_images(tmp_path / "img", 40)
    split = ["test" if i < 8 else "val" if i < 14 else "train" for i in range(40)]
    lines = [f"{p},{'|'.join(label_set(i)) if i < 36 else 'bag'},{s}" for i, (p, s) in enumerate(zip(paths, split))]
    lines.append(f"{paths[20]},dog,train")  # the same file again with another label set: its first row counts
    (tmp_path / "l.csv").write_text("path,labels,split\n" + "\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="imgcls"):
        bundle = load_dataset(csv_cfg(tmp_path / "l.csv"), seed=0, task="multilabel")
    assert bundle.splits["test"].ids == paths[:8] and bundle.splits["val"].ids == paths[8:14]
    assert len(bundle.splits["train"]) == 26 and "1 duplicate(s) dropped" in caplog.text
    train = bundle.splits["train"]
    assert train.labels[train.ids.index(paths[20])].tolist() == [float(n in label_set(20)) for n in NAMES]


def test_a_label_in_val_or_test_that_no_training_image_has_is_named(tmp_path):
    paths = write_images(tmp_path / "img", 20)
    split = ["test" if i < 5 else "train" for i in range(20)]
    cells = ["bag|cat" if i != 3 else "cat|scarf" for i in range(20)]
    (tmp_path / "l.csv").write_text("path,labels,split\n" +
                                    "".join(f"{p},{c},{s}\n" for p, c, s in zip(paths, cells, split)))
    with pytest.raises(UserError, match=r"^label 'scarf' of the test split of dataset 'csv' \(e\.g\. img/3\.png\) "
                                        r"is in no training image: add training images with it"):
        load_dataset(csv_cfg(tmp_path / "l.csv"), seed=0, task="multilabel")


def test_a_label_none_of_whose_files_decodes_is_named(tmp_path):
    paths = write_images(tmp_path / "img", 30)
    (tmp_path / "img" / "broken.png").write_text("not a png")
    cells = [f"{p},{'bag' if i % 2 else 'cat'}\n" for i, p in enumerate(paths)] + ["img/broken.png,cat|owl\n"]
    (tmp_path / "l.csv").write_text("path,labels\n" + "".join(cells))
    with pytest.raises(UserError, match=r"class\(es\) owl have no readable image"):
        load_dataset(csv_cfg(tmp_path / "l.csv"), seed=0, task="multilabel")


@pytest.mark.parametrize("header,row,columns,message", [
    ("path,,split", "a.png,bag,train", None,
     r"l\.csv: column 2 of the header has no name; name the column of label sets 'labels'"),
    ("path,split", "a.png,train", None, r"needs a 'labels' column \(label names joined by \|, empty for none\)"),
    ("path,bag,", "a.png,1,0", ["bag"], r"column 3 of the header has no name; label columns are read by name"),
    ("path,bag,cat", "a.png,1,0", ["bag", "dog"], r"dataset\.label_columns names 'dog', which .*l\.csv lacks; its "
                                                  r"header is path,bag,cat\.$"),
    ("path,bag,cat", "a.png,1,yes", ["bag", "cat"], r"l\.csv: row 2, column 'cat' holds 'yes'; a label column holds "
                                                    r"1 or 0 \(true or false\) in every row\.$"),
    ("path,bag,cat", "a.png,1", ["bag", "cat"], r"row 2, column 'cat' holds ''"),
])
def test_csv_mistakes_of_label_sets_are_one_line_errors(tmp_path, header, row, columns, message):
    (tmp_path / "l.csv").write_text(f"{header}\nb.png,0,0\n{row}\n")
    cfg = csv_cfg(tmp_path / "l.csv", **({"label_columns": columns} if columns else {}))
    with pytest.raises(UserError, match=message) as caught:
        load_dataset(cfg, seed=0, task="multilabel")
    assert "\n" not in str(caught.value)


def test_a_fraction_that_leaves_a_split_empty_and_a_training_split_without_labels_are_named(tmp_path):
    paths = write_images(tmp_path / "img", 12)
    (tmp_path / "few.csv").write_text("path,labels\n" + "".join(f"{p},{'|'.join(label_set(i))}\n"
                                                                 for i, p in enumerate(paths)))
    with pytest.raises(UserError, match=r"^dataset\.val_fraction=0\.04 leaves no validation image: 0\.04 of the 12 "
                                        r"image\(s\) rounds to 0; raise dataset\.val_fraction to 0\.05 or more"):
        load_dataset(csv_cfg(tmp_path / "few.csv", val_fraction=0.04), seed=0, task="multilabel")
    split = ["train"] * 6 + ["test"] * 6
    (tmp_path / "bare.csv").write_text("path,labels,split\n" + "".join(
        f"{p},{('bag', 'cat')[i % 2] if s == 'test' else ''},{s}\n" for i, (p, s) in enumerate(zip(paths, split))))
    with pytest.raises(UserError, match="no image of the training split of dataset 'csv' has a label"):
        load_dataset(csv_cfg(tmp_path / "bare.csv"), seed=0, task="multilabel")


@pytest.mark.parametrize("columns,message", [(["bag", "bag"], "names bag more than once"), ([], "must be a list"),
                                             (["bag", ""], "must be a list")])
def test_label_columns_must_name_each_column_once(label_csvs, columns, message):
    with pytest.raises(UserError, match=message):
        load_dataset(csv_cfg(label_csvs["columns"], label_columns=columns), seed=0, task="multilabel")


def test_task_and_kind_of_labels_must_agree(label_csvs):
    with pytest.raises(UserError, match=r"^dataset 'csv' is multi-label \(label sets per image\): train it with "
                                        r"task=multilabel \(a multiclass checkpoint cannot be scored on it\)\.$"):
        load_dataset(csv_cfg(label_csvs["cells"]), seed=0)
    with pytest.raises(UserError, match=r"^dataset 'digits' has one label per image; task=multilabel \(a run's, or a "
                                        r"multilabel checkpoint's\) needs label sets: dataset=csv with a labels "
                                        r"column"):
        load_dataset({"name": "digits"}, seed=0, task="multilabel")
    with pytest.raises(UserError, match="task must be multiclass or multilabel, not 'multi'"):
        load_dataset({"name": "digits"}, seed=0, task="multi")


def test_a_csv_with_label_and_labels_columns_is_read_as_the_task_says(tmp_path):
    paths = write_images(tmp_path / "img", 30)
    (tmp_path / "l.csv").write_text("path,label,labels\n" + "".join(
        f"{p},{'cat' if i % 2 else 'dog'},{'|'.join(label_set(i))}\n" for i, p in enumerate(paths)))
    single = load_dataset(csv_cfg(tmp_path / "l.csv"), seed=0)
    multi = load_dataset(csv_cfg(tmp_path / "l.csv"), seed=0, task="multilabel")
    assert single.classes == ["cat", "dog"] and not single.multilabel and single.splits["train"].labels.ndim == 1
    assert multi.classes == NAMES and multi.multilabel


def test_a_csv_of_label_sets_streamed_from_files_gives_multi_hot_batches(label_csvs):
    bundle = load_dataset(csv_cfg(label_csvs["cells"], in_memory=False), seed=0, task="multilabel")
    train = bundle.splits["train"]
    assert not train.in_memory
    loader = make_loader(train.images, train.labels, 16, bundle.mean, bundle.std, device=torch.device("cpu"),
                         num_workers=0)
    images, labels = next(iter(loader))
    assert images.shape == (16, 1, 8, 8) and labels.dtype == torch.float32 and labels.shape == (16, 4)
    assert torch.equal(labels, train.labels[:16])


def test_mixup_and_cutmix_mix_multi_hot_targets_by_the_same_lambda():
    y = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.float32)
    x = torch.rand(4, 1, 8, 8)
    for mixup, cutmix in ((1.0, 0.0), (0.0, 1.0)):
        mixed, targets = Mixer(mixup, cutmix, 1.0, 0.5, 3)(x, y, torch.Generator().manual_seed(0))
        lam = float(targets[0, 2])  # class 2 is on sample 0, not on its partner (sample 3): lambda itself
        assert torch.allclose(targets, y * lam + y.flip(0) * (1 - lam))
        if cutmix:  # lambda is the share of pixels that stayed
            assert lam == pytest.approx(float((mixed == x).float().mean()), abs=1e-6)


# ============================================================================================ iterative stratification
def skewed_labels(n: int, seed: int) -> np.ndarray:
    """n multi-hot rows over 8 labels with shares from 50% down to 1%, correlated pairs, and some empty rows."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, 8)) < np.array([0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01])
    y[:, 1] |= y[:, 0] & (rng.random(n) < 0.3)
    return y.astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1])
def test_iterative_stratification_keeps_each_labels_share_in_each_part(seed):
    y = skewed_labels(3000, seed)
    parts = iterative_stratification(y, [300, 600, 2100], seed)
    assert [len(p) for p in parts] == [300, 600, 2100]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(3000))
    totals = y.sum(axis=0)
    for part, size in zip(parts, (300, 600, 2100)):
        # each label's images in a part are its share of them, to within one image, the commonest label too (a
        # random split is off by about 10 images for it)
        assert np.all(np.abs(y[part].sum(axis=0) - totals * size / 3000) <= 1)
    empty = ~y.any(axis=1)
    assert [int(empty[p].sum()) for p in parts] == pytest.approx([empty.sum() * s / 3000 for s in (300, 600, 2100)],
                                                                 abs=1)


def test_iterative_stratification_gives_a_rare_label_its_exact_share():
    y = np.zeros((200, 3), np.uint8)
    y[np.arange(0, 200, 2), 0] = 1
    y[[3, 50, 77, 91, 120, 133, 150, 170, 181, 199], 2] = 1  # 10 images: 1 for 10% of the images, 9 for 90%
    for seed in range(5):
        small, big = iterative_stratification(y, [20, 180], seed)
        assert y[small, 2].sum() == 1 and y[small, 0].sum() == 10


def test_iterative_stratification_is_deterministic_per_seed():
    y = skewed_labels(500, 0)
    a, b, c = (stratified_split(y, [0.1, 0.2], s) for s in (3, 3, 4))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert [len(p) for p in a] == [50, 100, 350]


def test_multi_hot_folds_are_disjoint_covering_and_stratified():
    y = skewed_labels(1003, 2)
    folds = stratified_folds(y, 5, 0)
    assert sorted(len(f) for f in folds) == [200, 200, 201, 201, 201]
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(1003))
    for fold in folds:
        assert np.all(np.abs(y[fold].sum(axis=0) - y.sum(axis=0) / 5) <= 1)


def test_kfold_over_a_csv_of_label_sets_validates_on_each_image_once(label_csvs):
    bundles = [load_dataset(csv_cfg(label_csvs["cells"], folds=3, fold=k), seed=0, task="multilabel")
               for k in range(3)]
    vals = [set(b.splits["val"].ids) for b in bundles]
    pool = set(bundles[0].splits["train"].ids) | vals[0]
    assert not (vals[0] & vals[1] or vals[0] & vals[2] or vals[1] & vals[2]) and set().union(*vals) == pool
    assert all(b.splits["test"].ids == bundles[0].splits["test"].ids for b in bundles)
    for b in bundles:
        assert set(b.splits["train"].ids) == pool - set(b.splits["val"].ids)
        assert np.array_equal(b.splits["val"].labels.numpy(), expected_rows(b.splits["val"]))


def test_kfold_needs_each_label_in_as_many_images_as_folds(label_csvs):
    with pytest.raises(UserError, match=r"dataset\.folds=9 is more than the \d image\(s\) of class 'hat'"):
        load_dataset(csv_cfg(label_csvs["cells"], folds=9, fold=0), seed=0, task="multilabel")


def test_max_samples_take_an_exact_stratified_subset(label_csvs):
    full = load_dataset(csv_cfg(label_csvs["cells"]), seed=0, task="multilabel")
    small = load_dataset(csv_cfg(label_csvs["cells"], max_train_samples=30, max_eval_samples=10), seed=0,
                         task="multilabel")
    assert [len(small.splits[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    assert set(small.splits["train"].ids) <= set(full.splits["train"].ids)
    share = full.splits["train"].labels.mean(0)
    assert torch.allclose(small.splits["train"].labels.mean(0), share, atol=1.01 / 30 + 0.01)
    assert np.array_equal(small.splits["train"].labels.numpy(), expected_rows(small.splits["train"]))


# ============================================================================================ fashion_mnist_mosaic
def mosaic_cfg(**extra) -> dict:
    return {"name": "fashion_mnist_mosaic", "image_size": 56, "channels": 1, "val_fraction": 0.1,
            "num_train": 600, "num_test": 200, **extra}


@pytest.fixture(scope="module")
def fashion_items() -> dict[str, dict[bytes, int]]:
    """{split: {an item's 784 bytes: its class}} of the Fashion-MNIST files (no item is black or repeated)."""
    if not FASHION_DIR.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (.ci/run installs it)")
    from imgcls_cli.data.idx import load_idx_dataset

    data = load_idx_dataset([FASHION_DIR])
    return {split: {x.tobytes(): int(c) for x, c in zip(images[:, 0], labels)} for split, (images, labels) in
            data.items()}


def cells(image: torch.Tensor) -> list[np.ndarray]:
    x = image[0].numpy()
    return [x[:28, :28], x[:28, 28:], x[28:, :28], x[28:, 28:]]


@needs_fashion
def test_mosaic_labels_are_the_classes_of_the_items_in_its_cells(fashion_items):
    bundle = load_dataset(mosaic_cfg(), seed=0, task="multilabel")
    assert [len(bundle.splits[s]) for s in ("train", "val", "test")] == [540, 60, 200]
    assert bundle.classes[0] == "T-shirt/top" and bundle.num_classes == 10 and bundle.multilabel
    seen_empty = seen_full = 0
    for split, items in (("train", "train"), ("val", "train"), ("test", "test")):
        part = bundle.splits[split]
        assert part.images.shape == (len(part), 1, 56, 56) and part.images.dtype == torch.uint8
        assert all(i.startswith(f"{items}/") for i in part.ids)
        for image, row in zip(part.images, part.labels):
            classes = set()
            for cell in cells(image):
                if cell.max() == 0:
                    seen_empty += 1
                    continue
                # a KeyError: not an item of that Fashion-MNIST split (a test item in a train mosaic, or no item)
                classes.add(fashion_items[items][cell.tobytes()])
            assert set(np.flatnonzero(row.numpy()).tolist()) == classes
            seen_full += len(classes) == 4
    assert seen_empty and seen_full


@needs_fashion
def test_mosaics_are_the_same_in_every_run_and_change_with_their_own_seed():
    a = load_dataset(mosaic_cfg(), seed=0, task="multilabel")
    b = load_dataset(mosaic_cfg(), seed=1, task="multilabel")  # another run seed: other val mosaics, same mosaics
    other = load_dataset(mosaic_cfg(mosaic_seed=1), seed=0, task="multilabel")
    assert torch.equal(a.splits["test"].images, b.splits["test"].images)
    assert a.splits["val"].ids != b.splits["val"].ids
    by_id = dict(zip(b.splits["train"].ids + b.splits["val"].ids,
                     torch.cat([b.splits["train"].images, b.splits["val"].images])))
    assert all(torch.equal(by_id[i], x) for i, x in zip(a.splits["train"].ids, a.splits["train"].images))
    assert not torch.equal(a.splits["test"].images, other.splits["test"].images)


@needs_fashion
def test_the_default_mosaics_have_the_numbers_the_docs_give():
    """docs/datasets.md#multi-label-data states these numbers of the default fashion_mnist_mosaic."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / "fashion_mnist_mosaic.yaml"))
    bundle = load_dataset(cfg, seed=0, task="multilabel")
    assert [len(bundle.splits[s]) for s in ("train", "val", "test")] == [18000, 2000, 4000]
    train = torch.cat([bundle.splits["train"].labels, bundle.splits["val"].labels]).numpy().astype(int)
    test = bundle.splits["test"].labels.numpy().astype(int)
    assert np.bincount(train.sum(1)).tolist() == [152, 2176, 7262, 8028, 2382]  # mosaics with 0..4 labels
    assert np.bincount(test.sum(1)).tolist() == [35, 418, 1435, 1627, 485]
    assert train.sum(0).tolist() == [4965, 5010, 5150, 5062, 4949, 5029, 4991, 5005, 5038, 5113]
    assert test.sum(0).tolist() == [1011, 1040, 1006, 1019, 1024, 1011, 1004, 984, 986, 1024]
    val = bundle.splits["val"].labels.numpy().astype(int)
    assert val.sum(0).tolist() == [496, 501, 515, 506, 495, 503, 499, 500, 504, 511]  # a tenth of each, +-1


@needs_fashion
def test_mosaics_refuse_multiclass_and_bad_sizes():
    with pytest.raises(UserError, match="dataset 'fashion_mnist_mosaic' is multi-label"):
        load_dataset(mosaic_cfg(), seed=0)
    with pytest.raises(UserError, match=r"dataset\.empty_prob must be in \[0, 1\)"):
        load_dataset(mosaic_cfg(empty_prob=1.0), seed=0, task="multilabel")
    with pytest.raises(UserError, match=r"dataset\.num_train must be a whole number in \[1, 1000000\]"):
        load_dataset(mosaic_cfg(num_train=0), seed=0, task="multilabel")


# ============================================================================================ through the CLI
def test_the_cli_says_in_one_line_that_label_sets_need_task_multilabel(label_csvs, tmp_path):
    results = run_in_one_process({"columns": (["train", "dataset=csv", f"dataset.file={label_csvs['columns']}",
                                               "dataset.label_columns=[hat,dog,cat,bag]"], tmp_path),
                                  "missing": (["train", "dataset=csv", f"dataset.file={label_csvs['columns']}",
                                               "dataset.label_columns=[hat,owl]"], tmp_path)})
    assert_user_error(results["columns"], "is multi-label (label sets per image): train it with task=multilabel")
    assert_user_error(results["missing"], "dataset.label_columns names 'owl'")
