"""Domain-shift datasets (imgcls_cli/data/shifted.py), loaded through their config options as a user would:
digits_inverted, fashion_mnist_rotated and fashion_mnist_noisy are their base dataset's images, transformed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import assert_ok, read_json, run_cli
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.errors import UserError
from imgcls_cli.paths import CONF_DIR

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(),
                                   reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")
FASHION_LIMITS = {"max_train_samples": 500, "max_eval_samples": 500}


def option(name: str, **overrides) -> dict:
    """The keys of conf/dataset/NAME.yaml, with overrides, as load_dataset receives them."""
    return {**OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / f"{name}.yaml")), **overrides}


def images(bundle, split: str) -> np.ndarray:
    return bundle.splits[split].images.numpy()


def same_split(a, b, split: str) -> None:
    assert a.splits[split].ids == b.splits[split].ids
    assert np.array_equal(a.splits[split].labels.numpy(), b.splits[split].labels.numpy())
    assert a.classes == b.classes


# ============================================================================================ digits_inverted
@pytest.mark.parametrize("image_size", [8, 32])  # native size, and the option's (resized after the inversion)
def test_digits_inverted_is_255_minus_digits_in_the_same_splits(image_size):
    clean = load_dataset(option("digits", image_size=image_size), seed=3)
    inverted = load_dataset(option("digits_inverted", image_size=image_size), seed=3)
    assert inverted.name == "digits_inverted"
    for split in ("train", "val", "test"):
        same_split(clean, inverted, split)
        diff = np.abs(images(inverted, split).astype(int) - (255 - images(clean, split).astype(int)))
        assert diff.max() <= (0 if image_size == 8 else 1)  # resizing rounds x and 255 - x alike, but for ties
    assert inverted.mean[0] == pytest.approx(1 - clean.mean[0], abs=1e-3)  # statistics of the shifted images


# ============================================================================================ fashion_mnist_rotated
@pytest.fixture(scope="module")
def fashion_clean():
    if not FASHION_SYSTEM_DIR.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (.ci/run installs it)")
    return load_dataset(option("fashion_mnist", **FASHION_LIMITS), seed=0)


@needs_fashion
def test_rotated_fashion_mnist_rotates_every_image_counter_clockwise(fashion_clean):
    rotated = {angle: load_dataset(option("fashion_mnist_rotated", angle=angle, **FASHION_LIMITS), seed=0)
               for angle in (0, 90, 45)}
    for bundle in rotated.values():
        for split in ("train", "val", "test"):
            same_split(fashion_clean, bundle, split)
    clean = images(fashion_clean, "test")
    assert np.array_equal(images(rotated[0], "test"), clean)  # by 0: the originals, exactly
    # by 90 about the centre the pixel grid maps onto itself: bilinear gives np.rot90 (counter-clockwise) exactly
    assert np.array_equal(images(rotated[90], "test"), np.rot90(clean, 1, axes=(-2, -1)))
    by45 = images(rotated[45], "test").astype(int)
    assert (by45 != clean).mean() > 0.3
    # the corners come from outside the image: black (Fashion-MNIST's background), not wrapped or stretched
    assert by45[..., :3, :3].max() == 0 and by45[..., -3:, -3:].max() == 0
    assert abs(by45.sum() / clean.astype(int).sum() - 1) < 0.05  # the garment is turned, not lost


# ============================================================================================ fashion_mnist_noisy
@needs_fashion
def test_noisy_fashion_mnist_is_the_same_noise_in_every_run(fashion_clean):
    cfg = option("fashion_mnist_noisy", **FASHION_LIMITS)
    a, b = load_dataset(cfg, seed=0), load_dataset(cfg, seed=1)
    assert a.splits["train"].ids != b.splits["train"].ids  # other seeds, other subsets ...
    by_id = {i: img for s in a.splits.values() for i, img in zip(s.ids, s.images.numpy())}
    shared = [(by_id[i], img) for s in b.splits.values() for i, img in zip(s.ids, s.images.numpy()) if i in by_id]
    assert len(shared) > 20
    assert all(np.array_equal(x, y) for x, y in shared)  # ... but an image has the same noise in both
    same_split(fashion_clean, a, "test")
    diff = images(a, "test").astype(int) - images(fashion_clean, "test").astype(int)
    # default noise_std 0.3 (76.5 of 255): E|n| = 61 on mid-gray, ~31 on the black background (clipped at 0)
    assert 25 < np.abs(diff).mean() < 65


@needs_fashion
def test_noise_std_is_a_fraction_of_255(fashion_clean):
    noisy = load_dataset(option("fashion_mnist_noisy", noise_std=0.05, **FASHION_LIMITS), seed=0)
    clean = images(fashion_clean, "test").astype(int)
    diff = images(noisy, "test").astype(int) - clean
    mid = (clean >= 64) & (clean <= 191)  # 5 sigma from 0 and 255: clipping does not matter there
    assert mid.sum() > 10_000
    assert diff[mid].std() == pytest.approx(0.05 * 255, rel=0.05)
    assert abs(diff[mid].mean()) < 0.5
    zero = load_dataset(option("fashion_mnist_noisy", noise_std=0, **FASHION_LIMITS), seed=0)
    assert np.array_equal(images(zero, "test"), images(fashion_clean, "test"))


# ============================================================================================ mistakes
@pytest.mark.parametrize("name,key,value", [
    ("fashion_mnist_noisy", "noise_std", -1), ("fashion_mnist_noisy", "noise_std", "loud"),
    ("fashion_mnist_rotated", "angle", float("nan")), ("fashion_mnist_rotated", "angle", "left"),
])
def test_bad_keys_are_one_line_user_errors_naming_the_key(name, key, value):
    with pytest.raises(UserError) as info:  # checked before any file is read
        load_dataset(option(name, **{key: value}), seed=0)
    assert f"dataset.{key}" in str(info.value) and "\n" not in str(info.value)


# ============================================================================================ through the CLI
def test_train_on_a_shifted_dataset_from_the_command_line(tmp_path):
    result = run_cli("train", "dataset=digits_inverted", "epochs=1", "dataset.max_train_samples=64",
                     "dataset.max_eval_samples=64", "model.widths=[8,16,16]", "model.hidden=32",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_ok(result)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["status"] == "completed", summary
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").dataset.name == "digits_inverted"
