"""The synthetic pattern dataset: shapes, determinism, no brightness shortcut, and learnable patterns."""
from __future__ import annotations

import numpy as np
import pytest

from imgcls_cli.data.synthetic import CLASS_NAMES, make_synthetic


def nearest_mean_accuracy(features: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Held-out accuracy of a nearest-class-mean classifier trained on the first 3/4 of the samples."""
    split = len(labels) * 3 // 4
    centres = np.stack([features[:split][labels[:split] == k].mean(axis=0) for k in range(num_classes)])
    distances = ((features[split:, None, :] - centres[None]) ** 2).sum(axis=-1)
    return float((distances.argmin(axis=1) == labels[split:]).mean())


def spectrum(images: np.ndarray) -> np.ndarray:
    """Log magnitude of the 2-D FFT of each (channel-averaged) image: phase-free, so shifts do not matter."""
    gray = images.astype(np.float32).mean(axis=1)
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    return np.log1p(np.abs(np.fft.fft2(gray))).reshape(len(images), -1)


def test_class_names() -> None:
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) == 10
    assert CLASS_NAMES[:5] == ("horizontal", "vertical", "diagonal", "circular", "noise")


@pytest.mark.parametrize(
    ("num_samples", "num_classes", "size", "channels"), [(103, 10, 32, 3), (20, 2, 8, 1), (7, 7, 17, 1)]
)
def test_shapes_dtypes_and_balance(num_samples: int, num_classes: int, size: int, channels: int) -> None:
    images, labels = make_synthetic(num_samples, num_classes, size, channels, seed=0)
    assert images.shape == (num_samples, channels, size, size) and images.dtype == np.uint8
    assert labels.shape == (num_samples,) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=num_classes)
    assert len(counts) == num_classes and counts.max() - counts.min() <= 1


def test_labels_are_shuffled() -> None:
    _, labels = make_synthetic(200, 4, 8, 1, seed=0)
    assert not np.array_equal(labels, np.sort(labels))
    assert not np.array_equal(labels, np.arange(200) % 4)


def test_same_seed_gives_identical_bytes_and_other_seeds_differ() -> None:
    first = make_synthetic(50, 5, 16, 3, seed=7)
    again = make_synthetic(50, 5, 16, 3, seed=7)
    other = make_synthetic(50, 5, 16, 3, seed=8)
    assert first[0].tobytes() == again[0].tobytes() and first[1].tobytes() == again[1].tobytes()
    assert first[0].tobytes() != other[0].tobytes()


def test_images_use_the_intensity_range_without_saturating() -> None:
    images, _ = make_synthetic(200, 10, 32, 3, seed=0)
    assert images.std() > 20
    assert np.mean((images == 0) | (images == 255)) < 0.01


@pytest.mark.parametrize("channels", [1, 3])
def test_classes_have_similar_brightness_and_contrast(channels: int) -> None:
    images, labels = make_synthetic(5000, 10, 16, channels, seed=1)
    pixels = images.astype(np.float32)
    means = np.array([pixels[labels == k].mean() for k in range(10)])
    stds = np.array([pixels[labels == k].std() for k in range(10)])
    assert means.max() - means.min() < 4
    assert stds.max() / stds.min() < 1.08


@pytest.mark.parametrize("channels", [1, 3])
def test_no_class_is_separable_by_brightness_contrast_or_colour(channels: int) -> None:
    images, labels = make_synthetic(2000, 5, 32, channels, seed=2)
    pixels = images.astype(np.float32)
    per_image = np.concatenate([pixels.mean(axis=(2, 3)), pixels.std(axis=(2, 3))], axis=1)
    per_image = (per_image - per_image.mean(axis=0)) / per_image.std(axis=0)
    assert nearest_mean_accuracy(per_image, labels, 5) < 0.4


def test_five_classes_are_learnable_from_the_spectrum() -> None:
    images, labels = make_synthetic(1200, 5, 32, 1, seed=3)
    assert nearest_mean_accuracy(spectrum(images), labels, 5) >= 0.9


def test_all_ten_classes_are_learnable_from_the_spectrum_in_colour() -> None:
    images, labels = make_synthetic(2000, 10, 32, 3, seed=4)
    assert nearest_mean_accuracy(spectrum(images), labels, 10) >= 0.85


def test_small_images_stay_learnable() -> None:
    images, labels = make_synthetic(1200, 5, 8, 1, seed=5)
    assert nearest_mean_accuracy(spectrum(images), labels, 5) >= 0.75


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((100, 1, 32, 1), "num_classes"),
        ((100, 11, 32, 1), "num_classes"),
        ((4, 5, 32, 1), "num_samples"),
        ((100, 5, 7, 1), "image_size"),
        ((100, 5, 32, 2), "channels"),
        ((100, 5, 32, 4), "channels"),
    ],
)
def test_invalid_arguments(arguments: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_synthetic(*arguments, seed=0)
