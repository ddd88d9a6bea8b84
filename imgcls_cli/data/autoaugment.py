"""RandAugment and TrivialAugmentWide, batch-wise: torchvision.transforms.v2's op lists and magnitude tables.

Each sample draws its own op (and sign, and for TrivialAugment its own magnitude bin); the samples are grouped
by op, so each op runs once per round on the subset that drew it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from imgcls_cli.data.augment_ops import (
    AUGMENTS, PixelOp, affine_theta, blend, gray, on_subset, per_sample, resample, tv_functional,
)

Magnitudes = Callable[[int, int, int], torch.Tensor]  # (num_bins, height, width) -> one magnitude per bin
Space = dict[str, tuple[Magnitudes | None, bool]]  # op -> (magnitudes or None, signed)


def _linear(hi: float) -> Magnitudes:
    return lambda bins, height, width: torch.linspace(0.0, hi, bins)


def _bits(fewest: int) -> Magnitudes:
    """Posterize bits falling from 8 to 8 - `fewest` over the bins."""
    return lambda bins, height, width: (8 - (torch.arange(bins) / ((bins - 1) / fewest))).round().int()


def _solarize_thresholds(bins: int, height: int, width: int) -> torch.Tensor:
    return torch.linspace(1.0, 0.0, bins)


RANDAUGMENT_SPACE: Space = {
    "Identity": (None, False),
    "ShearX": (_linear(0.3), True),
    "ShearY": (_linear(0.3), True),
    "TranslateX": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, bins), True),
    "TranslateY": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, bins), True),
    "Rotate": (_linear(30.0), True),
    "Brightness": (_linear(0.9), True),
    "Color": (_linear(0.9), True),
    "Contrast": (_linear(0.9), True),
    "Sharpness": (_linear(0.9), True),
    "Posterize": (_bits(4), False),
    "Solarize": (_solarize_thresholds, False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}

TRIVIALAUGMENT_SPACE: Space = {
    "Identity": (None, False),
    "ShearX": (_linear(0.99), True),
    "ShearY": (_linear(0.99), True),
    "TranslateX": (_linear(32.0), True),
    "TranslateY": (_linear(32.0), True),
    "Rotate": (_linear(135.0), True),
    "Brightness": (_linear(0.99), True),
    "Color": (_linear(0.99), True),
    "Contrast": (_linear(0.99), True),
    "Sharpness": (_linear(0.99), True),
    "Posterize": (_bits(6), False),
    "Solarize": (_solarize_thresholds, False),
    "AutoContrast": (None, False),
    "Equalize": (None, False),
}


def _shear_x(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # torchvision shears about the top-left corner: x_in = x + m (y + H/2) in pixels from the centre.
    k = m * x.shape[-2] / x.shape[-1]
    return resample(x, affine_theta(1.0, k, k, 0.0, 1.0, 0.0))


def _shear_y(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    k = m * x.shape[-1] / x.shape[-2]
    return resample(x, affine_theta(1.0, 0.0, 0.0, k, 1.0, k))


def _translate_x(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return resample(x, affine_theta(1.0, 0.0, -2 * m.trunc() / x.shape[-1], 0.0, 1.0, 0.0))  # whole pixels


def _translate_y(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return resample(x, affine_theta(1.0, 0.0, 0.0, 0.0, 1.0, -2 * m.trunc() / x.shape[-2]))


def _rotate(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # Counter-clockwise by m degrees about the centre; normalized coordinates stretch by the aspect ratio.
    rad, aspect = torch.deg2rad(m), x.shape[-2] / x.shape[-1]
    return resample(x, affine_theta(rad.cos(), -rad.sin() * aspect, 0.0, rad.sin() / aspect, rad.cos(), 0.0))


def _contrast_about_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return blend(x, gray(x).mean(dim=(1, 2, 3), keepdim=True), 1 + m)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend the inside with a 3x3 smoothed copy (PIL's kernel); the 1-pixel border stays."""
    c, height, width = x.shape[1:]
    if height <= 2 or width <= 2:
        return x
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    smooth = F.conv2d(x, (kernel / 13).expand(c, 1, 3, 3), groups=c)
    out = x.clone()
    out[..., 1:-1, 1:-1] = blend(x[..., 1:-1, 1:-1], smooth, 1 + m)
    return out


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    levels = per_sample(2.0 ** m, x)
    return torch.minimum((x * levels).floor_(), levels - 1).div_(levels)


def _solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= per_sample(m, x), 1 - x, x)


# Each op with per-sample magnitudes m (CPU, one per sample of x), as torchvision's functional would apply it;
# the geometric ones interpolate bilinearly (torchvision's auto-augment default is nearest), zeros outside.
_AUTO_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Rotate": _rotate,
    "Brightness": lambda x, m: blend(x, torch.zeros_like(x), 1 + m),
    "Color": lambda x, m: x if x.shape[1] == 1 else blend(x, gray(x), 1 + m),
    "Contrast": _contrast_about_mean,
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda x, m: tv_functional().autocontrast(x),
    "Equalize": lambda x, m: tv_functional().equalize(x),
}


def _apply_auto_op(x: torch.Tensor, mask: torch.Tensor, name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """One op on the samples of mask (a function, so the lambda binds this op's name and magnitudes)."""
    return on_subset(x, mask, lambda s, i: _AUTO_OPS[name](s, magnitude[i]))


def _auto_augment(space: Space, num_ops: int, num_bins: int, magnitude: int | None
                  ) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]:
    """num_ops rounds; in each, every chosen sample draws its own op and sign, and its own magnitude bin
    when `magnitude` is None (TrivialAugment). The samples are grouped by op: one call per op on the subset
    that drew it, with per-sample magnitudes.
    """
    ops = list(space.items())

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, height, width = x.shape
        tables = [None if table is None else table(num_bins, height, width).float() for _, (table, _) in ops]
        for _ in range(num_ops):
            op = torch.randint(len(ops), (n,), generator=g)
            bins = torch.full((n,), magnitude) if magnitude is not None else torch.randint(num_bins, (n,), generator=g)
            negative = torch.rand(n, generator=g) <= 0.5
            for k, (name, (_, signed)) in enumerate(ops):
                if name == "Identity":
                    continue
                values = torch.zeros(n) if tables[k] is None else tables[k][bins]
                x = _apply_auto_op(x, m & (op == k), name, torch.where(negative & signed, -values, values))
        return x

    return apply




@AUGMENTS.register("randaugment")
def randaugment(*, p: float, num_ops: int, magnitude: int, num_magnitude_bins: int) -> PixelOp:
    """torchvision's RandAugment, batch-wise: num_ops ops per sample from 14, all at one magnitude bin."""
    return PixelOp(p, _auto_augment(RANDAUGMENT_SPACE, num_ops, num_magnitude_bins, magnitude))


@AUGMENTS.register("trivialaugment")
def trivialaugment(*, p: float, num_magnitude_bins: int) -> PixelOp:
    """torchvision's TrivialAugmentWide, batch-wise: one op per sample at a magnitude bin drawn per sample."""
    return PixelOp(p, _auto_augment(TRIVIALAUGMENT_SPACE, 1, num_magnitude_bins, None))
