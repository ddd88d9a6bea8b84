"""Batch-wise augmentation on the training device: each op is registered by name with its probability and range.

Ops work on float images in [0, 1], shape (N, C, H, W). Random draws come from a CPU generator, so the
same seed gives the same augmented batch on any device. Every op draws its parameters per sample (tensors
of angles, factors, boxes) and transforms the whole batch, or the subset of samples that drew it, at once:
never a loop over samples. Rotation, scale, translation and random resized crop compose into one affine
warp per batch (a single interpolation).

MixUp and CutMix are configured in the same group (`mixup`, `cutmix`, `mix_prob`, `switch_prob`) but
mix labels too, so the training loop applies them apart from the per-image ops: see `BatchAugment.mixer`.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F

from imgcls_cli.data.mix import Mixer
from imgcls_cli.errors import UserError, as_float, as_int
from imgcls_cli.registry import Registry

AUGMENTS: Registry = Registry("augmentation op")

# Keys of the augment group that are settings of the batch mixing, not ops.
MIX_SETTINGS = ("mix_prob", "switch_prob")


def _uniform(shape: int | tuple[int, ...], lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64).mul_(hi - lo).add_(lo).float()


def _chosen(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """CPU per-sample values on x's device, shaped to broadcast over (C, H, W)."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _on_subset(x: torch.Tensor, mask: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
               ) -> torch.Tensor:
    """fn(x[idx], idx) written back at idx (mask and idx on the CPU): only the samples that drew an op pay for it."""
    idx = mask.nonzero().squeeze(1)
    if len(idx) == 0:
        return x
    on_device = idx.to(x.device)
    return x.index_copy(0, on_device, fn(x.index_select(0, on_device), idx))


def _resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp by per-sample affine_grid matrices (output -> input, normalized coordinates), zeros outside."""
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _theta(*entries: torch.Tensor | float) -> torch.Tensor:
    """Six per-sample entries (a, b, tx, c, d, ty; scalars broadcast) as (N, 2, 3) affine_grid matrices."""
    columns = torch.broadcast_tensors(*(torch.as_tensor(e, dtype=torch.float32) for e in entries))
    return torch.stack(columns, dim=-1).view(-1, 2, 3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other per sample, clamped: torchvision's colour-op formula."""
    f = _per_sample(factor, x)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (N, 1, H, W) with torchvision's weights; gray images are their own luma."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


class AffineOp:
    """Returns per-sample affine parameters (angle, scale, tx, ty, crop_*) for an image size (H, W)."""

    def __init__(self, p: float,
                 sample: Callable[[int, torch.Generator, tuple[int, int]], dict[str, torch.Tensor]]) -> None:
        self.p, self.sample = p, sample


class PixelOp:
    """Transforms the samples of a CPU bool mask: apply(x, mask, gen); the others stay as they are."""

    def __init__(self, p: float, apply: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]) -> None:
        self.p, self.apply = p, apply


class MixOp:
    """One batch-level mixing (MixUp or CutMix) and its Beta(alpha, alpha); applied by a Mixer, not per image."""

    def __init__(self, kind: str, alpha: float) -> None:
        self.kind, self.alpha = kind, alpha


def _probability_at(key: str, p: Any) -> float:
    p = as_float(p, key)
    if not 0.0 <= p <= 1.0:
        raise UserError(f"{key} must be a probability in [0, 1], not {p}.")
    return p


def _probability(name: str, p: Any) -> float:
    return _probability_at(f"augment.{name}.p", p)


def _plain(value: Any) -> Any:
    """A config value as the user wrote it: OmegaConf lists as plain lists."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def _pair(name: str, key: str, value: Any, upper: float = math.inf) -> tuple[float, float]:
    """A [low, high] config pair with 0 < low <= high <= upper, or a UserError naming the key."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not 0 < lo <= hi <= upper:
        bound = "" if upper == math.inf else f" <= {upper:g}"
        raise UserError(f"augment.{name}.{key} must be two numbers 0 < low <= high{bound}, not {_plain(value)!r}.")
    return lo, hi


def _first_fit(fits: torch.Tensor, *candidates: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row, the candidates of the first try that fits (torchvision's up-to-10-tries loop, batch-wise)."""
    first = fits.int().argmax(1, keepdim=True)
    return tuple(c.gather(1, first).squeeze(1) for c in candidates)


@AUGMENTS.register("hflip")
def hflip(p: float = 0.5) -> PixelOp:
    return PixelOp(_probability("hflip", p),
                   lambda x, m, g: torch.where(m.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x))


@AUGMENTS.register("vflip")
def vflip(p: float = 0.5) -> PixelOp:
    return PixelOp(_probability("vflip", p),
                   lambda x, m, g: torch.where(m.to(x.device).view(-1, 1, 1, 1), x.flip(-2), x))


@AUGMENTS.register("rotation")
def rotation(p: float = 0.5, degrees: float = 10.0) -> AffineOp:
    rad = math.radians(as_float(degrees, "augment.rotation.degrees"))
    return AffineOp(_probability("rotation", p), lambda n, g, hw: {"angle": _uniform(n, -rad, rad, g)})


@AUGMENTS.register("scale")
def scale(p: float = 0.5, range: tuple[float, float] = (0.9, 1.1)) -> AffineOp:  # noqa: A002 - config key
    lo, hi = _pair("scale", "range", range)
    return AffineOp(_probability("scale", p), lambda n, g, hw: {"scale": _uniform(n, lo, hi, g)})


@AUGMENTS.register("translate")
def translate(p: float = 0.5, fraction: float = 0.1) -> AffineOp:
    f = as_float(fraction, "augment.translate.fraction")
    if not 0 <= f < 1:
        raise UserError(f"augment.translate.fraction must be in [0, 1), not {f}.")
    return AffineOp(_probability("translate", p),
                    lambda n, g, hw: {"tx": _uniform(n, -f, f, g), "ty": _uniform(n, -f, f, g)})


@AUGMENTS.register("random_resized_crop")
def random_resized_crop(p: float = 1.0, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> AffineOp:
    """torchvision's RandomResizedCrop as part of the affine warp: the crop box is resized to the full image.

    The box is continuous (sub-pixel), not rounded to whole pixels, since the warp interpolates anyway.
    """
    area = _pair("random_resized_crop", "scale", scale, upper=1.0)
    lo, hi = _pair("random_resized_crop", "ratio", ratio)

    def sample(n: int, g: torch.Generator, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        aspect_image = hw[1] / hw[0]
        target, aspect = _uniform((n, 10), *area, g), _uniform((n, 10), math.log(lo), math.log(hi), g).exp()
        # Width and height as fractions of the image's: w = sqrt(area * H * W * aspect) / W, etc.
        w, h = (target * aspect / aspect_image).sqrt(), (target / aspect * aspect_image).sqrt()
        fits = (w <= 1) & (h <= 1)
        w, h = _first_fit(fits, w, h)
        # No try fits: the whole image narrowed to the ratio range, centred (torchvision's fallback).
        w = torch.where(fits.any(1), w, min(1.0, hi / aspect_image))
        h = torch.where(fits.any(1), h, min(1.0, aspect_image / lo))
        left, top = torch.rand(n, generator=g) * (1 - w), torch.rand(n, generator=g) * (1 - h)
        return {"crop_w": w, "crop_h": h, "crop_x": 2 * left + w - 1, "crop_y": 2 * top + h - 1}

    return AffineOp(_probability("random_resized_crop", p), sample)


def _factor_range(name: str, r: Any) -> tuple[float, float]:
    r = as_float(r, f"augment.{name}.range")
    if not 0 <= r < 1:
        raise UserError(f"augment.{name}.range must be in [0, 1), not {r}.")
    return 1 - r, 1 + r


@AUGMENTS.register("brightness")
def brightness(p: float = 0.5, range: float = 0.2) -> PixelOp:  # noqa: A002
    lo, hi = _factor_range("brightness", range)

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        alpha = torch.where(m, _uniform(len(m), lo, hi, g), torch.ones(len(m)))  # I * alpha
        return (x * alpha.to(x.device).view(-1, 1, 1, 1)).clamp_(0, 1)

    return PixelOp(_probability("brightness", p), apply)


@AUGMENTS.register("contrast")
def contrast(p: float = 0.5, range: float = 0.2) -> PixelOp:  # noqa: A002
    lo, hi = _factor_range("contrast", range)

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        alpha = torch.where(m, _uniform(len(m), lo, hi, g), torch.ones(len(m))).to(x.device).view(-1, 1, 1, 1)
        mu = x.mean(dim=(1, 2, 3), keepdim=True)  # alpha * (I - mu) + mu
        return (alpha * (x - mu) + mu).clamp_(0, 1)

    return PixelOp(_probability("contrast", p), apply)


@AUGMENTS.register("saturation")
def saturation(p: float = 0.5, range: float = 0.2) -> PixelOp:  # noqa: A002
    """Blend with the luma by a factor in [1 - range, 1 + range]; gray images have no saturation to change."""
    lo, hi = _factor_range("saturation", range)

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        factor = torch.where(m, _uniform(len(m), lo, hi, g), torch.ones(len(m)))
        return x if x.shape[1] == 1 else _blend(x, _gray(x), factor)

    return PixelOp(_probability("saturation", p), apply)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in [0, 1), saturation and value, each (N, H, W); gray pixels get hue 0 (no division by zero)."""
    r, g, b = x.unbind(1)
    v, lo = x.amax(1), x.amin(1)
    delta = v - lo
    span = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = delta / torch.where(v > 0, v, torch.ones_like(v))
    h = torch.where(v == r, (g - b) / span, torch.where(v == g, 2 + (b - r) / span, 4 + (r - g) / span))
    return (h / 6).remainder_(1), s, v


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) from hue, saturation, value: channel n in (5, 3, 1) is v - v s clamp(min(k, 4 - k), 0, 1),
    k = (n + 6 h) mod 6, the closed form of the six-sector formula."""
    n = torch.tensor([5.0, 3.0, 1.0], device=h.device, dtype=h.dtype).view(1, 3, 1, 1)
    k = (n + 6 * h.unsqueeze(1)).remainder_(6)
    return v.unsqueeze(1) * (1 - s.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1))


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each RGB image by its own fraction of the colour wheel."""
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb((h + _per_sample(shift, x).squeeze(1)).remainder_(1), s, v)


@AUGMENTS.register("hue")
def hue(p: float = 0.5, range: float = 0.1) -> PixelOp:  # noqa: A002
    """Shift the hue by a fraction in [-range, range] of the colour wheel (torchvision's adjust_hue, per sample)."""
    r = as_float(range, "augment.hue.range")
    if not 0 <= r <= 0.5:
        raise UserError(f"augment.hue.range must be in [0, 0.5] (a fraction of the colour wheel), not {r}.")

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        shift = _uniform(len(m), -r, r, g)
        return x if x.shape[1] == 1 else _on_subset(x, m, lambda s, i: _shift_hue(s, shift[i]))

    return PixelOp(_probability("hue", p), apply)


def _box_mask(top: torch.Tensor, left: torch.Tensor, h: torch.Tensor, w: torch.Tensor, x: torch.Tensor
              ) -> torch.Tensor:
    """(N, 1, H, W) bool, True inside each sample's box, built on x's device by broadcasting."""
    rows = torch.arange(x.shape[-2], device=x.device).view(1, 1, -1, 1)
    cols = torch.arange(x.shape[-1], device=x.device).view(1, 1, 1, -1)
    top, left, h, w = (t.to(x.device).view(-1, 1, 1, 1) for t in (top, left, h, w))
    return (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)


@AUGMENTS.register("random_erasing")
def random_erasing(p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), value: float | str = 0.0) -> PixelOp:
    """torchvision's RandomErasing: a rectangle of `scale` of the area and `ratio` height/width is filled with
    `value` (a gray level) or 'noise' (uniform per pixel, timm's mode 'pixel' in [0, 1] units)."""
    area = _pair("random_erasing", "scale", scale, upper=1.0)
    log_ratio = tuple(math.log(r) for r in _pair("random_erasing", "ratio", ratio))
    noise = value == "noise"
    fill = 0.0 if noise else value
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0 <= fill <= 1:
        raise UserError(f"augment.random_erasing.value must be a gray level in [0, 1] or 'noise', not {value!r}.")

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, (height, width) = len(m), x.shape[-2:]
        target, aspect = _uniform((n, 10), *area, g) * (height * width), _uniform((n, 10), *log_ratio, g).exp()
        h, w = (target * aspect).sqrt().round().long(), (target / aspect).sqrt().round().long()
        fits = (h < height) & (w < width)
        h, w = _first_fit(fits, h, w)
        top = (torch.rand(n, generator=g) * (height - h + 1)).long()
        left = (torch.rand(n, generator=g) * (width - w + 1)).long()

        def erase(s: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            pixels = torch.rand(s.shape, generator=g).to(s.device) if noise else fill
            return torch.where(_box_mask(top[i], left[i], h[i], w[i], s), pixels, s)

        return _on_subset(x, m & fits.any(1), erase)

    return PixelOp(_probability("random_erasing", p), apply)


def _tv_functional() -> Any:
    """torchvision.transforms.v2.functional, imported on first use (torchvision costs ~1.5 s to import)."""
    import torchvision.transforms.v2.functional as tv_functional

    return tv_functional


# --- RandAugment and TrivialAugmentWide: torchvision.transforms.v2's op lists and magnitude tables. ---

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
    return _resample(x, _theta(1.0, k, k, 0.0, 1.0, 0.0))


def _shear_y(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    k = m * x.shape[-1] / x.shape[-2]
    return _resample(x, _theta(1.0, 0.0, 0.0, k, 1.0, k))


def _translate_x(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _resample(x, _theta(1.0, 0.0, -2 * m.trunc() / x.shape[-1], 0.0, 1.0, 0.0))  # whole pixels


def _translate_y(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _resample(x, _theta(1.0, 0.0, 0.0, 0.0, 1.0, -2 * m.trunc() / x.shape[-2]))


def _rotate(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # Counter-clockwise by m degrees about the centre; normalized coordinates stretch by the aspect ratio.
    rad, aspect = torch.deg2rad(m), x.shape[-2] / x.shape[-1]
    return _resample(x, _theta(rad.cos(), -rad.sin() * aspect, 0.0, rad.sin() / aspect, rad.cos(), 0.0))


def _contrast_about_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), 1 + m)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend the inside with a 3x3 smoothed copy (PIL's kernel); the 1-pixel border stays."""
    c, height, width = x.shape[1:]
    if height <= 2 or width <= 2:
        return x
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    smooth = F.conv2d(x, (kernel / 13).expand(c, 1, 3, 3), groups=c)
    out = x.clone()
    out[..., 1:-1, 1:-1] = _blend(x[..., 1:-1, 1:-1], smooth, 1 + m)
    return out


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    levels = _per_sample(2.0 ** m, x)
    return torch.minimum((x * levels).floor_(), levels - 1).div_(levels)


def _solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= _per_sample(m, x), 1 - x, x)


# Each op with per-sample magnitudes m (CPU, one per sample of x), as torchvision's functional would apply it;
# the geometric ones interpolate bilinearly (torchvision's auto-augment default is nearest), zeros outside.
_AUTO_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Rotate": _rotate,
    "Brightness": lambda x, m: _blend(x, torch.zeros_like(x), 1 + m),
    "Color": lambda x, m: x if x.shape[1] == 1 else _blend(x, _gray(x), 1 + m),
    "Contrast": _contrast_about_mean,
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda x, m: _tv_functional().autocontrast(x),
    "Equalize": lambda x, m: _tv_functional().equalize(x),
}


def _apply_auto_op(x: torch.Tensor, mask: torch.Tensor, name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """One op on the samples of mask (a function, so the lambda binds this op's name and magnitudes)."""
    return _on_subset(x, mask, lambda s, i: _AUTO_OPS[name](s, magnitude[i]))


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


def _bins(name: str, num_magnitude_bins: Any) -> int:
    return as_int(num_magnitude_bins, f"augment.{name}.num_magnitude_bins", minimum=2)


@AUGMENTS.register("randaugment")
def randaugment(p: float = 1.0, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> PixelOp:
    """torchvision's RandAugment, batch-wise: num_ops ops per sample from 14, all at one magnitude bin."""
    bins = _bins("randaugment", num_magnitude_bins)
    level = as_int(magnitude, "augment.randaugment.magnitude", minimum=0)
    if level >= bins:
        raise UserError(f"augment.randaugment.magnitude must be a whole number in [0, {bins - 1}] "
                        f"(below num_magnitude_bins), not {level}.")
    ops = as_int(num_ops, "augment.randaugment.num_ops", minimum=0)
    return PixelOp(_probability("randaugment", p), _auto_augment(RANDAUGMENT_SPACE, ops, bins, level))


@AUGMENTS.register("trivialaugment")
def trivialaugment(p: float = 1.0, num_magnitude_bins: int = 31) -> PixelOp:
    """torchvision's TrivialAugmentWide, batch-wise: one op per sample at a magnitude bin drawn per sample."""
    bins = _bins("trivialaugment", num_magnitude_bins)
    return PixelOp(_probability("trivialaugment", p), _auto_augment(TRIVIALAUGMENT_SPACE, 1, bins, None))


def _alpha(name: str, alpha: Any) -> float:
    a = as_float(alpha, f"augment.{name}.alpha")
    if not 0 <= a < math.inf:
        raise UserError(f"augment.{name}.alpha must be >= 0 (0 turns {name} off), not {a}.")
    return a


@AUGMENTS.register("mixup")
def mixup(alpha: float = 0.2) -> MixOp:
    """MixUp of the batch with itself reversed, lambda ~ Beta(alpha, alpha); see imgcls_cli.data.mix."""
    return MixOp("mixup", _alpha("mixup", alpha))


@AUGMENTS.register("cutmix")
def cutmix(alpha: float = 1.0) -> MixOp:
    """CutMix of the batch with itself reversed, box area from Beta(alpha, alpha); see imgcls_cli.data.mix."""
    return MixOp("cutmix", _alpha("cutmix", alpha))


def _build_op(name: str, params: Any) -> AffineOp | PixelOp | MixOp:
    """The op of one config key; unknown keys name the closest op or mixing setting."""
    if name not in AUGMENTS:
        close = difflib.get_close_matches(str(name), MIX_SETTINGS, n=1, cutoff=0.7)
        if close:
            raise UserError(f"unknown augment key '{name}'. Did you mean {close[0]}?")
    builder = AUGMENTS.get(name)
    params = {} if params is None else ({"p": params} if isinstance(params, (int, float)) else dict(params))
    try:
        return builder(**params)
    except TypeError as exc:
        raise UserError(f"augment.{name}: {exc}") from None


class BatchAugment:
    """The ops of one augment config, applied in config order (affine ops gathered into one warp first).

    Mixing is not part of __call__: it needs the labels and the class count, which the training loop has.
    Get it with `mixer(num_classes)` and call it on each batch after the per-image ops (and normalization);
    `mix_params` holds the checked mixing settings it is built from.
    """

    def __init__(self, ops: dict[str, Any]) -> None:
        self.affine: list[AffineOp] = []
        self.pixel: list[PixelOp] = []
        self.mix_params = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "mix_prob": 1.0, "switch_prob": 0.5}
        for name, params in ops.items():
            if name in MIX_SETTINGS:
                self.mix_params[name] = _probability_at(f"augment.{name}", params)
                continue
            op = _build_op(name, params)
            if isinstance(op, MixOp):
                self.mix_params[f"{op.kind}_alpha"] = op.alpha
            else:
                (self.affine if isinstance(op, AffineOp) else self.pixel).append(op)

    @property
    def mixes(self) -> bool:
        return self.mix_params["mixup_alpha"] > 0 or self.mix_params["cutmix_alpha"] > 0

    def mixer(self, num_classes: int) -> Mixer | None:
        """The MixUp/CutMix of this config for num_classes classes, or None when the config mixes nothing."""
        return Mixer(num_classes=num_classes, **self.mix_params) if self.mixes else None

    def __bool__(self) -> bool:
        return bool(self.affine or self.pixel or self.mixes)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.affine:
            x = self._warp(x, gen)
        for op in self.pixel:
            x = op.apply(x, _chosen(len(x), op.p, gen), gen)
        return x

    def _warp(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, size = len(x), (x.shape[-2], x.shape[-1])
        params = {"angle": torch.zeros(n), "scale": torch.ones(n), "tx": torch.zeros(n), "ty": torch.zeros(n),
                  "crop_w": torch.ones(n), "crop_h": torch.ones(n), "crop_x": torch.zeros(n), "crop_y": torch.zeros(n)}
        for op in self.affine:
            mask = _chosen(n, op.p, gen)
            for key, value in op.sample(n, gen, size).items():
                params[key] = torch.where(mask, value, params[key])
        cos, sin = torch.cos(params["angle"]), torch.sin(params["angle"])
        s, w, h = params["scale"], params["crop_w"], params["crop_h"]
        # affine_grid maps output to input coordinates: the inverse of "rotate, scale, then shift", then
        # into the crop box, which the crop stretches over the whole image.
        return _resample(x, _theta(w * cos / s, w * -sin / s, w * -2 * params["tx"] + params["crop_x"],
                                   h * sin / s, h * cos / s, h * -2 * params["ty"] + params["crop_y"]))


def build_augment(cfg: dict[str, Any]) -> BatchAugment:
    """Build from an augment config: every key but `name` is an op or a mixing setting."""
    return BatchAugment({k: v for k, v in cfg.items() if k != "name"})
