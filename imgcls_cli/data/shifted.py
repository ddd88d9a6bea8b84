"""Domain-shift datasets: real images transformed at load, for domain-adaptation experiments.

Each one is a base dataset (digits, fashion_mnist) with the same images, labels, classes, ids and splits, but
with every image changed in one way, so that a model trained on the base dataset (the source domain) can be
tested or adapted on the shifted one (the target domain):

- digits_inverted: 255 - x (light digits on black become dark digits on white).
- fashion_mnist_rotated: every image rotated by dataset.angle degrees counter-clockwise (bilinear, black outside).
- fashion_mnist_noisy: additive Gaussian pixel noise of std dataset.noise_std (a fraction of 255), clipped to
  0..255. The noise comes from a fixed generator seed, not the run's seed: the target domain is the same images
  in every run, whatever the seed, and each image keeps its noise whatever subset or split a run takes.

The transforms run on the base builder's uint8 (N, C, H, W) images at their native size, before load_dataset
resizes them, a chunk at a time so that memory stays bounded (Fashion-MNIST: 70,000 images).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from imgcls_cli.data.builders import DATASETS, Source, digits, fashion_mnist

NOISE_SEED = 12345  # fixed: the noisy images are the same in every run
CHUNK_BYTES = 64 * 2**20  # float32 working memory per chunk of images


def _chunk(images: np.ndarray, floats_per_pixel: int = 1) -> int:
    """Images per chunk so that a chunk's float32 copies stay around CHUNK_BYTES."""
    per_image = 4 * floats_per_pixel * int(np.prod(images.shape[1:]) or 1)
    return max(1, CHUNK_BYTES // per_image)


def _with_images(source: Source, images: np.ndarray) -> Source:
    """The same source (labels, classes, ids, predefined splits) with other images."""
    return replace(source, images=images)


def invert(images: np.ndarray) -> np.ndarray:
    """255 - x for a uint8 batch."""
    return np.subtract(np.uint8(255), images, dtype=np.uint8)


def rotate(images: np.ndarray, angle: float) -> np.ndarray:
    """Rotate every image of a uint8 (N, C, H, W) batch by `angle` degrees counter-clockwise about its centre
    (bilinear; what comes from outside the image is 0, i.e. black). Batched, a chunk at a time."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    out = np.empty_like(images)
    step = _chunk(images, 2)  # grid_sample works on a float copy (plus torchvision's own buffers)
    for lo in range(0, len(images), step):
        x = torch.from_numpy(np.ascontiguousarray(images[lo:lo + step]))
        # fill=None: zero padding inside grid_sample, i.e. black. (fill=0 would add torchvision's mask channel and
        # multiply border pixels by it a second time, darkening the edges of the image.)
        y = TF.rotate(x, float(angle), interpolation=InterpolationMode.BILINEAR, expand=False, fill=None)
        out[lo:lo + step] = y.numpy()
    return out


def add_noise(images: np.ndarray, std: float, seed: int = NOISE_SEED) -> np.ndarray:
    """images + N(0, (std * 255)^2), rounded and clipped to 0..255; the noise depends only on `seed` and on each
    image's position in the batch (the chunk size is fixed), never on the run."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    step = _chunk(images)
    sigma = np.float32(std * 255.0)
    for lo in range(0, len(images), step):
        part = images[lo:lo + step]
        noisy = rng.standard_normal(part.shape, dtype=np.float32)
        noisy *= sigma
        noisy += part
        np.rint(noisy, out=noisy)
        np.clip(noisy, 0, 255, out=noisy)
        out[lo:lo + step] = noisy
    return out


@DATASETS.register("digits_inverted")
def digits_inverted(**kwargs: Any) -> Source:
    """scikit-learn's digits with inverted intensities (255 - x): dark digits on white, a domain-shift target."""
    source = digits(**kwargs)
    return _with_images(source, invert(source.images))


@DATASETS.register("fashion_mnist_rotated")
def fashion_mnist_rotated(*, angle: float = 45, **kwargs: Any) -> Source:
    """Fashion-MNIST with every image rotated by dataset.angle degrees counter-clockwise (bilinear, black fill)."""
    source = fashion_mnist(**kwargs)
    return _with_images(source, rotate(source.images, angle))


@DATASETS.register("fashion_mnist_noisy")
def fashion_mnist_noisy(*, noise_std: float = 0.3, **kwargs: Any) -> Source:
    """Fashion-MNIST with fixed additive Gaussian noise of std dataset.noise_std (fraction of 255), clipped."""
    source = fashion_mnist(**kwargs)
    return _with_images(source, add_noise(source.images, noise_std))
