import numpy as np
import pytest
import torch

from imgcls_cli.data import datasets, pixels
from imgcls_cli.data.datasets import channel_stats, load_dataset
from imgcls_cli.data.pixels import convert_channels, resize_batch
from imgcls_cli.data.loader import DeviceLoader
from imgcls_cli.data.splits import stratified_split, stratified_subset
from imgcls_cli.errors import UserError

DIGITS = {"name": "digits", "image_size": 32, "channels": 1, "val_fraction": 0.15, "test_fraction": 0.2,
          "max_train_samples": None, "max_eval_samples": None}


def test_stratified_split_is_disjoint_covering_and_balanced():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    val, test, train = stratified_split(labels, [0.2, 0.1], seed=0)
    all_idx = np.concatenate([val, test, train])
    assert len(all_idx) == len(labels) and len(np.unique(all_idx)) == len(labels)
    for cls, n in zip(range(4), [100, 50, 30, 20]):
        assert (labels[val] == cls).sum() == round(0.2 * n)
        assert (labels[test] == cls).sum() == round(0.1 * n)


def test_split_depends_on_seed_only():
    labels = np.repeat(np.arange(3), 40)
    a = stratified_split(labels, [0.25], seed=1)
    b = stratified_split(labels, [0.25], seed=1)
    c = stratified_split(labels, [0.25], seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_subset_has_exactly_n_and_keeps_class_proportions():
    labels = np.repeat(np.arange(3), [60, 30, 10])
    keep = stratified_subset(labels, 50, seed=0)
    assert len(keep) == 50 and len(np.unique(keep)) == 50
    assert np.bincount(labels[keep]).tolist() == [30, 15, 5]
    assert len(stratified_subset(labels, None, seed=0)) == 100


def test_digits_splits_are_stratified_and_written_as_a_table():
    bundle = load_dataset(DIGITS, seed=0)
    sizes = {s: len(bundle.splits[s]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.2 * 1797, abs=10)
    assert bundle.classes == [str(i) for i in range(10)]
    assert bundle.splits["train"].images.shape[1:] == (1, 32, 32)
    assert bundle.splits["train"].images.dtype == torch.uint8
    assert len(bundle.split_table) == 1797
    ids = {s: set(bundle.splits[s].ids) for s in ("train", "val", "test")}
    assert not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    table = dict(bundle.split_table)
    assert all(table[i] == "test" for i in ids["test"])


def test_digits_split_is_the_same_for_the_same_seed():
    a, b = load_dataset(DIGITS, seed=3), load_dataset(DIGITS, seed=3)
    c = load_dataset(DIGITS, seed=4)
    assert a.splits["test"].ids == b.splits["test"].ids
    assert a.splits["test"].ids != c.splits["test"].ids


def test_max_samples_give_stratified_subsets():
    bundle = load_dataset({**DIGITS, "max_train_samples": 100, "max_eval_samples": 50}, seed=0)
    assert len(bundle.splits["train"]) == 100
    assert len(bundle.splits["val"]) == 50 and len(bundle.splits["test"]) == 50
    assert torch.bincount(bundle.splits["train"].labels).tolist() == [10] * 10


def test_mean_and_std_come_from_the_train_split():
    bundle = load_dataset(DIGITS, seed=0)
    x = bundle.splits["train"].images.double() / 255
    assert bundle.mean[0] == pytest.approx(x.mean().item())
    assert bundle.std[0] == pytest.approx(x.std().item(), rel=1e-4)


def test_synthetic_dataset_has_its_classes_and_channels():
    cfg = {"name": "synthetic", "num_samples": 200, "num_classes": 4, "image_size": 16, "channels": 3,
           "val_fraction": 0.1, "test_fraction": 0.1}
    bundle = load_dataset(cfg, seed=0)
    assert bundle.classes == ["horizontal", "vertical", "diagonal", "circular"]
    assert bundle.splits["train"].images.shape[1:] == (3, 16, 16)


@pytest.mark.parametrize("override,message", [
    ({"val_fraction": 0.6, "test_fraction": 0.5}, "leave some data to train on"),
    ({"val_fraction": -0.1}, "dataset.val_fraction must be in"),
    ({"channels": 2}, "dataset.channels must be 1 or 3"),
    ({"image_size": 0}, "dataset.image_size"),
    ({"max_train_samples": 0}, "dataset.max_train_samples"),
    ({"name": "digit"}, "Did you mean digits"),
])
def test_bad_dataset_values_are_user_errors(override, message):
    with pytest.raises(UserError, match=message):
        load_dataset({**DIGITS, **override}, seed=0)


def test_resize_and_channel_conversion():
    x = np.arange(2 * 1 * 8 * 8, dtype=np.uint8).reshape(2, 1, 8, 8)
    assert resize_batch(x, 16).shape == (2, 1, 16, 16)
    assert resize_batch(x, 4).shape == (2, 1, 4, 4)
    rgb = convert_channels(x, 3)
    assert rgb.shape == (2, 3, 8, 8) and np.array_equal(rgb[:, 1], x[:, 0])
    assert np.array_equal(convert_channels(rgb, 1), x)


@pytest.mark.parametrize("size", [5, 24])
def test_resize_in_chunks_gives_the_same_images_as_all_at_once(size, monkeypatch):
    """Large datasets are resized a chunk at a time (bounded memory); the result must not depend on it."""
    x = np.random.default_rng(0).integers(0, 256, (7, 3, 12, 12), dtype=np.uint8)
    whole = resize_batch(x, size)
    monkeypatch.setattr(pixels, "RESIZE_CHUNK_BYTES", 3 * 4 * 3 * 24 * 24)  # 3 images a chunk
    chunked = resize_batch(x, size)
    assert chunked.dtype == np.uint8 and np.array_equal(chunked, whole)


def test_only_the_used_subset_is_resized(monkeypatch):
    """max_*_samples cap the images that are resized, not only the ones kept (memory at large sizes)."""
    seen = []
    real = datasets.resize_batch
    monkeypatch.setattr(datasets, "resize_batch", lambda images, size: seen.append(len(images)) or real(images, size))
    bundle = load_dataset({**DIGITS, "image_size": 64, "max_train_samples": 20, "max_eval_samples": 10}, seed=0)
    assert sorted(seen) == [10, 10, 20]
    assert bundle.splits["train"].images.shape == (20, 1, 64, 64)


def test_channel_stats_per_channel():
    x = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    x[:, 1] = 255
    mean, std = channel_stats(x)
    assert mean == pytest.approx([0.0, 1.0, 0.0])
    assert std == pytest.approx([1e-3, 1e-3, 1e-3])  # floored: a constant channel never divides by zero


def test_device_loader_covers_every_sample_once_per_epoch_and_normalizes():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10)
    loader = DeviceLoader(images, labels, 4, mean=[0.0], std=[1.0], shuffle=True, seed=0)
    seen = torch.cat([y for _, y in loader])
    assert sorted(seen.tolist()) == list(range(10)) and len(loader) == 3
    for x, y in loader:
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float())  # image i holds value i: images follow labels


def test_device_loader_order_is_a_function_of_seed_and_epoch():
    images, labels = torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50)
    loader = DeviceLoader(images, labels, 10, [0.0], [1.0], shuffle=True, seed=1)
    order = lambda: torch.cat([y for _, y in loader]).tolist()  # noqa: E731
    loader.set_epoch(1)
    first = order()
    assert order() == first
    loader.set_epoch(2)
    assert order() != first


def test_drop_last_drops_only_a_short_remainder():
    images, labels = torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10)
    assert len(DeviceLoader(images, labels, 4, [0.0], [1.0], drop_last=True)) == 2
    assert len(DeviceLoader(images, labels, 16, [0.0], [1.0], drop_last=True)) == 1
