"""Every dataset of the registry on real files the tests write: IDX (raw and .gz), CIFAR python batches, image
folders with mixed modes and broken files, CSV label files; splits, k-fold, class weights and the sampler."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from imgcls_cli.data.datasets import DATASETS, load_dataset
from imgcls_cli.data.loader import DeviceLoader
from imgcls_cli.data.splits import stratified_folds
from imgcls_cli.engine.train import class_weights, sampler_weights
from imgcls_cli.errors import UserError
from imgcls_cli.paths import CONF_DIR

BASE = {"image_size": 28, "channels": 1, "max_train_samples": None, "max_eval_samples": None}


def split_sizes(bundle) -> dict[str, int]:
    return {s: len(bundle.splits[s]) for s in ("train", "val", "test")}


# ============================================================================================ IDX (MNIST format)
def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist_files(folder: Path, n_train: int = 200, n_test: int = 50, compress: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {"train": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), np.arange(n_train) % 10),
              "t10k": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), np.arange(n_test) % 10)}
    for prefix, (images, labels) in arrays.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), compress)
    return arrays


@pytest.mark.parametrize("name,compress", [("mnist", False), ("fashion_mnist", True)])
def test_idx_datasets_read_the_official_splits_and_carve_val_from_train(tmp_path, name, compress):
    arrays = write_mnist_files(tmp_path, compress=compress)
    bundle = load_dataset({**BASE, "name": name, "root": str(tmp_path), "val_fraction": 0.1}, seed=0)
    assert split_sizes(bundle) == {"train": 180, "val": 20, "test": 50}
    assert bundle.num_classes == 10 and (bundle.name == "mnist") == (bundle.classes[0] == "0")
    test_images = bundle.splits["test"].images[:, 0].numpy()
    assert np.array_equal(test_images, arrays["t10k"][0])  # the official test set, in file order
    assert np.bincount(bundle.splits["val"].labels.numpy()).tolist() == [2] * 10  # stratified


def test_idx_files_missing_say_where_they_are_expected_and_how_to_get_them(tmp_path):
    with pytest.raises(UserError) as info:
        load_dataset({**BASE, "name": "mnist", "root": str(tmp_path), "val_fraction": 0.1}, seed=0)
    message = str(info.value)
    assert str(tmp_path) in message and "dataset.download=true" in message and "\n" not in message


def test_truncated_idx_file_is_a_user_error(tmp_path):
    write_mnist_files(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated"):
        load_dataset({**BASE, "name": "mnist", "root": str(tmp_path), "val_fraction": 0.1}, seed=0)


# ============================================================================================ CIFAR
def write_cifar(folder: Path, name: str, per_batch: int = 30) -> np.ndarray:
    """CIFAR python batches as the official archive has them (pickled dicts with bytes keys)."""
    rng = np.random.default_rng(1)
    k, label_key = (10, b"labels") if name == "cifar10" else (100, b"fine_labels")
    sub = folder / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    sub.mkdir(parents=True)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10" else ["train", "test"]
    test_data = None
    for file in files:
        n = per_batch if name == "cifar10" else per_batch * 10
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(sub / file, "wb") as f:
            pickle.dump({b"data": data, label_key: [i % k for i in range(n)], b"batch_label": b"x"}, f, protocol=2)
        if "test" in file:
            test_data = data
    meta, key = ("batches.meta", b"label_names") if name == "cifar10" else ("meta", b"fine_label_names")
    with open(sub / meta, "wb") as f:
        pickle.dump({key: [f"class{i}".encode() for i in range(k)]}, f, protocol=2)
    return test_data


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_python_batches(tmp_path, name, classes):
    test_data = write_cifar(tmp_path, name)
    bundle = load_dataset({**BASE, "name": name, "root": str(tmp_path), "image_size": 32, "channels": 3,
                           "val_fraction": 0.2}, seed=0)
    assert bundle.num_classes == classes and bundle.classes[1] == "class1"
    assert sum(split_sizes(bundle).values()) == (180 if name == "cifar10" else 600)
    first = bundle.splits["test"].images[0].numpy()
    assert np.array_equal(first, test_data[0].reshape(3, 32, 32))  # channel-first RGB planes, as stored


def test_cifar_batch_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(UserError, match="data_batch_3 is not a readable CIFAR batch"):
        load_dataset({**BASE, "name": "cifar10", "root": str(tmp_path), "image_size": 32, "channels": 3,
                      "val_fraction": 0.1}, seed=0)
    assert not marker.exists()


def test_cifar_missing_names_the_folder_and_download(tmp_path):
    with pytest.raises(UserError, match=r"cifar-10-batches-py.*dataset.download=true"):
        load_dataset({**BASE, "name": "cifar10", "root": str(tmp_path), "image_size": 32, "channels": 3}, seed=0)


# ============================================================================================ image folders
def digit_images(n: int, size: int = 20) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([cv2.resize((im * 255 / 16).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
                       for im in digits.images[:n]])
    return images, digits.target[:n]


def write_mode(path: Path, gray: np.ndarray, mode: int) -> None:
    """One image in one of five file modes: gray PNG, RGB JPEG, RGBA PNG, 16-bit PNG, palette PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == 0:
        cv2.imwrite(str(path.with_suffix(".png")), gray)
    elif mode == 1:
        cv2.imwrite(str(path.with_suffix(".JPG")), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    elif mode == 2:
        cv2.imwrite(str(path.with_suffix(".png")), np.dstack([gray, gray, gray, np.full_like(gray, 128)]))
    elif mode == 3:
        cv2.imwrite(str(path.with_suffix(".png")), gray.astype(np.uint16) * 257)
    else:
        from PIL import Image

        Image.fromarray(gray).convert("P").save(path.with_suffix(".png"))


def write_tree(root: Path, n: int = 120, classes: dict[int, str] | None = None) -> dict[str, int]:
    """digits as class folders (some nested, some with spaces and non-ASCII names) in mixed file modes."""
    images, labels = digit_images(n)
    names = classes or {i: f"digit {i}" for i in range(10)}
    counts: dict[str, int] = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[int(label)] / ("nested" if i % 7 == 0 else "")
        write_mode(folder / f"img{i:03d}", image, i % 5)
        counts[names[int(label)]] = counts.get(names[int(label)], 0) + 1
    return counts


def write_bad_files(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.png").write_text("not a png")
    (folder / "empty.jpg").write_bytes(b"")
    good = np.full((20, 20), 200, np.uint8)
    ok, data = cv2.imencode(".jpg", good)
    (folder / "cut.jpg").write_bytes(data.tobytes()[: len(data) // 2])  # truncated
    (folder / ".hidden.png").write_text("hidden files are not images of the dataset")
    (folder / "notes.txt").write_text("not an image extension")
    return ["broken.png", "cut.jpg", "empty.jpg"]


def folder_cfg(root: Path, **extra) -> dict:
    return {**BASE, "name": "imagefolder", "root": str(root), "image_size": 16, "channels": 3, "val_fraction": 0.1,
            "test_fraction": 0.2, **extra}


def test_imagefolder_single_tree_decodes_every_mode_and_skips_bad_files(tmp_path):
    counts = write_tree(tmp_path / "data", classes={i: n for i, n in enumerate(
        ["zéro", "one", "two two", "3", "four", "five", "six", "seven", "eight", "nine"])})
    bad = write_bad_files(tmp_path / "data" / "one")
    bundle = load_dataset(folder_cfg(tmp_path / "data"), seed=0)
    assert bundle.classes == sorted(counts) and bundle.channels == 3 and bundle.id_column == "path"
    assert sum(split_sizes(bundle).values()) == 120
    assert sorted(Path(p).name for p, _ in bundle.skipped) == bad
    assert all(why for _, why in bundle.skipped)
    images = torch.cat([s.images for s in bundle.splits.values()])
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 16, 16)
    gray = bundle.splits["train"].images.float()
    assert (gray[:, 0] - gray[:, 1]).abs().max() <= 3  # gray files come out as R = G = B in every mode
    ids = [i for s in bundle.splits.values() for i in s.ids]
    assert all(not Path(i).is_absolute() for i in ids) and any(i.startswith("zéro/nested/") for i in ids)


def test_imagefolder_grayscale_channels(tmp_path):
    write_tree(tmp_path, n=60)
    bundle = load_dataset(folder_cfg(tmp_path, channels=1, image_size=24), seed=0)
    assert bundle.splits["train"].images.shape[1:] == (1, 24, 24) and len(bundle.mean) == 1


def test_imagefolder_train_val_test_folders_are_the_splits(tmp_path):
    sizes = {"train": 100, "val": 30, "test": 40}
    for split, n in sizes.items():
        write_tree(tmp_path / split, n=n)
    bundle = load_dataset(folder_cfg(tmp_path), seed=0)
    assert split_sizes(bundle) == sizes
    assert all(i.startswith("val/") for i in bundle.splits["val"].ids)


def test_imagefolder_train_and_val_folders_carve_test_from_train(tmp_path):
    write_tree(tmp_path / "train", n=100)
    write_tree(tmp_path / "valid", n=30)
    bundle = load_dataset(folder_cfg(tmp_path, test_fraction=0.2), seed=0)
    assert split_sizes(bundle) == {"train": 80, "val": 30, "test": 20}
    assert all(i.startswith("train/") for i in bundle.splits["test"].ids)
    no_test = load_dataset(folder_cfg(tmp_path, test_fraction=0.0), seed=0)
    assert split_sizes(no_test) == {"train": 100, "val": 30, "test": 0}


@pytest.mark.parametrize("make,message", [
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: (root / "a").mkdir(parents=True), "no images"),
    (lambda root: write_bad_files(root / "cats") and write_tree(root, n=30), "cats have no readable image"),
    (lambda root: write_tree(root / "train", n=30) and (root / "val").mkdir(), "val has no images"),
    (lambda root: write_tree(root / "val", n=30), "no train folder"),
    (lambda root: None, "is not a folder"),
])
def test_imagefolder_mistakes_are_clear_errors(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(UserError) as info:
        load_dataset(folder_cfg(root), seed=0)
    assert message in str(info.value).replace("/", "").replace("'", "")


def test_imagefolder_on_bad_file_error_names_the_bad_files(tmp_path):
    write_tree(tmp_path, n=40)
    write_bad_files(tmp_path / "digit 1")
    with pytest.raises(UserError, match=r"3 file\(s\) could not be decoded: .*broken.png") as info:
        load_dataset(folder_cfg(tmp_path, on_bad_file="error"), seed=0)
    assert "dataset.on_bad_file=skip" in str(info.value)


def test_tool_made_splits_are_seeded_and_reused_from_a_splits_file(tmp_path):
    write_tree(tmp_path, n=100)
    a, b, c = (load_dataset(folder_cfg(tmp_path), seed=s) for s in (0, 0, 1))
    assert a.splits["test"].ids == b.splits["test"].ids != c.splits["test"].ids
    splits_file = tmp_path.parent / "splits.csv"
    splits_file.write_text("path,split\n" + "".join(f"{i},{s}\n" for i, s in a.split_table))
    write_mode(tmp_path / "digit 0" / "added_later", np.zeros((20, 20), np.uint8), 0)  # a file added since
    again = load_dataset(folder_cfg(tmp_path, splits_file=str(splits_file)), seed=5)
    assert {s: again.splits[s].ids for s in again.splits} == {s: a.splits[s].ids for s in a.splits}


# ============================================================================================ CSV
def test_csv_reads_relative_paths_and_an_optional_split_column(tmp_path):
    images, labels = digit_images(60)
    rows = []
    (tmp_path / "img").mkdir()
    for i, (image, label) in enumerate(zip(images, labels)):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), image)
        rows.append((f"img/{i}.png", str(label), "test" if i < 10 else "train"))
    rows.append(("img/missing.png", "3", "train"))
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab, _ in rows))
    bundle = load_dataset({**BASE, "name": "csv", "file": str(tmp_path / "labels.csv"), "image_size": 8,
                           "channels": 1, "val_fraction": 0.2, "test_fraction": 0.2}, seed=0)
    assert bundle.classes == [str(i) for i in range(10)]  # whole-number labels in numeric order
    assert sum(split_sizes(bundle).values()) == 60 and [Path(p).name for p, _ in bundle.skipped] == ["missing.png"]
    (tmp_path / "split.csv").write_text("Path,Label,Split\n" + "".join(f"{p},{lab},{s}\n" for p, lab, s in rows))
    fixed = load_dataset({**BASE, "name": "csv", "file": str(tmp_path / "split.csv"), "image_size": 8,
                          "channels": 1, "val_fraction": 0.2, "test_fraction": 0.2}, seed=0)
    assert fixed.splits["test"].ids == [f"img/{i}.png" for i in range(10)]
    assert len(fixed.splits["val"]) == 10  # no val rows: carved from train


@pytest.mark.parametrize("text,message", [("file,class\na.png,1\n", "'path' and 'label' columns"),
                                          ("path,label\n", "no rows"),
                                          ("path,label,split\na.png,1,holdout\n", "holdout")])
def test_csv_mistakes_are_clear_errors(tmp_path, text, message):
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        load_dataset({**BASE, "name": "csv", "file": str(tmp_path / "l.csv")}, seed=0)


# ============================================================================================ k-fold
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_folds_are_disjoint_covering_and_balanced(seed):
    labels = np.random.default_rng(seed).integers(0, 4, 103)
    folds = stratified_folds(labels, 5, seed)
    everything = np.concatenate(folds)
    assert sorted(everything.tolist()) == list(range(103))
    for cls in range(4):
        per_fold = [int((labels[f] == cls).sum()) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1
    assert max(map(len, folds)) - min(map(len, folds)) <= 1


def test_kfold_validates_on_each_fold_once_and_keeps_the_test_split():
    cfg = {**BASE, "name": "digits", "image_size": 8, "val_fraction": 0.15, "test_fraction": 0.2, "folds": 4}
    bundles = [load_dataset({**cfg, "fold": k}, seed=0) for k in range(4)]
    vals = [set(b.splits["val"].ids) for b in bundles]
    pool = set(bundles[0].splits["train"].ids) | vals[0]
    assert set().union(*vals) == pool and sum(map(len, vals)) == len(pool)
    assert all(b.splits["test"].ids == bundles[0].splits["test"].ids for b in bundles)
    assert all(not (set(b.splits["train"].ids) & set(b.splits["val"].ids)) for b in bundles)
    with pytest.raises(UserError, match="dataset.fold must be in 0..3"):
        load_dataset({**cfg, "fold": 4}, seed=0)


# ============================================================================================ imbalance
def test_class_weights_auto_are_inverse_frequency():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    weights = class_weights({"class_weights": "auto"}, labels, ["a", "b", "c"])
    assert weights.tolist() == pytest.approx([100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10)])
    assert (weights[labels].sum() / len(labels)).item() == pytest.approx(1.0)  # the loss keeps its scale
    assert class_weights({"class_weights": None}, labels, ["a", "b", "c"]) is None
    assert class_weights({"class_weights": [1, 2, 3]}, labels, ["a", "b", "c"]).tolist() == [1, 2, 3]
    with pytest.raises(UserError, match="3 non-negative numbers"):
        class_weights({"class_weights": [1, 2]}, labels, ["a", "b", "c"])


def test_balanced_sampler_draws_every_class_about_equally():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    weights = sampler_weights({"sampler": "balanced"}, labels, 3)
    loader = DeviceLoader(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), labels, 100, [0.0], [1.0], shuffle=True,
                          sample_weights=weights, seed=3)
    drawn = torch.cat([y for _, y in loader])
    assert len(drawn) == 1000
    assert torch.bincount(drawn, minlength=3).tolist() == pytest.approx([333, 333, 333], abs=60)
    with pytest.raises(UserError, match="dataset.sampler must be null or balanced"):
        sampler_weights({"sampler": "oversample"}, labels, 3)


def test_given_mean_and_std_replace_the_computed_ones():
    cfg = {**BASE, "name": "digits", "image_size": 8, "val_fraction": 0.15, "test_fraction": 0.2}
    bundle = load_dataset({**cfg, "mean": [0.5], "std": 0.25}, seed=0)
    assert (bundle.mean, bundle.std) == ([0.5], [0.25])
    with pytest.raises(UserError, match="dataset.std"):
        load_dataset({**cfg, "mean": 0.5, "std": None}, seed=0)


def test_every_dataset_has_a_config():
    assert {p.stem for p in (CONF_DIR / "dataset").glob("*.yaml")} == set(DATASETS.names())


def test_split_seed_fixes_the_splits_whatever_the_run_seed():
    cfg = {**BASE, "name": "digits", "image_size": 8, "val_fraction": 0.15, "test_fraction": 0.2}
    a, b = (load_dataset({**cfg, "split_seed": 0}, seed=s) for s in (1, 2))
    assert a.splits["test"].ids == b.splits["test"].ids
    assert load_dataset(cfg, seed=1).splits["test"].ids != load_dataset(cfg, seed=2).splits["test"].ids
