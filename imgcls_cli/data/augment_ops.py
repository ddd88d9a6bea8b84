"""The per-image augmentation ops, registered by name: flips, the affine ops, colour, hue and random erasing.

Ops work on float images in [0, 1], shape (N, C, H, W). Random draws come from a CPU generator, so the
same seed gives the same augmented batch on any device. Every op draws its parameters per sample (tensors
of angles, factors, boxes) and transforms the whole batch, or the subset of samples that drew it, at once:
never a loop over samples. A builder takes the values imgcls_cli.specs.augment checked for its op.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from imgcls_cli.registry import Registry

AUGMENTS: Registry = Registry("augmentation op")

def _uniform(shape: int | tuple[int, ...], lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float64).mul_(hi - lo).add_(lo).float()


def chosen(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """CPU per-sample values on x's device, shaped to broadcast over (C, H, W)."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def on_subset(x: torch.Tensor, mask: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
               ) -> torch.Tensor:
    """fn(x[idx], idx) written back at idx (mask and idx on the CPU): only the samples that drew an op pay for it."""
    idx = mask.nonzero().squeeze(1)
    if len(idx) == 0:
        return x
    on_device = idx.to(x.device)
    return x.index_copy(0, on_device, fn(x.index_select(0, on_device), idx))


def resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp by per-sample affine_grid matrices (output -> input, normalized coordinates), zeros outside."""
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_theta(*entries: torch.Tensor | float) -> torch.Tensor:
    """Six per-sample entries (a, b, tx, c, d, ty; scalars broadcast) as (N, 2, 3) affine_grid matrices."""
    columns = torch.broadcast_tensors(*(torch.as_tensor(e, dtype=torch.float32) for e in entries))
    return torch.stack(columns, dim=-1).view(-1, 2, 3)


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other per sample, clamped: torchvision's colour-op formula."""
    f = per_sample(factor, x)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def gray(x: torch.Tensor) -> torch.Tensor:
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


class MixOp:
    """One batch-level mixing (MixUp or CutMix) and its Beta(alpha, alpha): the training loop applies it through
    BatchAugment.mixer, not per image; registered so that the op names (and their keys) are in one table."""

    def __init__(self, kind: str, alpha: float) -> None:
        self.kind, self.alpha = kind, alpha


class PixelOp:
    """Transforms the samples of a CPU bool mask: apply(x, mask, gen); the others stay as they are."""

    def __init__(self, p: float, apply: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]) -> None:
        self.p, self.apply = p, apply


def _first_fit(fits: torch.Tensor, *candidates: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row, the candidates of the first try that fits (torchvision's up-to-10-tries loop, batch-wise)."""
    first = fits.int().argmax(1, keepdim=True)
    return tuple(c.gather(1, first).squeeze(1) for c in candidates)


@AUGMENTS.register("hflip")
def hflip(*, p: float) -> PixelOp:
    return PixelOp(p, lambda x, m, g: torch.where(m.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x))


@AUGMENTS.register("vflip")
def vflip(*, p: float) -> PixelOp:
    return PixelOp(p, lambda x, m, g: torch.where(m.to(x.device).view(-1, 1, 1, 1), x.flip(-2), x))


@AUGMENTS.register("rotation")
def rotation(*, p: float, degrees: float) -> AffineOp:
    rad = math.radians(degrees)
    return AffineOp(p, lambda n, g, hw: {"angle": _uniform(n, -rad, rad, g)})


@AUGMENTS.register("scale")
def scale(*, p: float, range: tuple[float, float]) -> AffineOp:  # noqa: A002 - config key
    lo, hi = range
    return AffineOp(p, lambda n, g, hw: {"scale": _uniform(n, lo, hi, g)})


@AUGMENTS.register("translate")
def translate(*, p: float, fraction: float) -> AffineOp:
    f = fraction
    return AffineOp(p, lambda n, g, hw: {"tx": _uniform(n, -f, f, g), "ty": _uniform(n, -f, f, g)})


@AUGMENTS.register("random_resized_crop")
def random_resized_crop(*, p: float, scale: tuple[float, float], ratio: tuple[float, float]) -> AffineOp:
    """torchvision's RandomResizedCrop as part of the affine warp: the crop box is resized to the full image.

    The box is continuous (sub-pixel), not rounded to whole pixels, since the warp interpolates anyway.
    """
    area, (lo, hi) = scale, ratio

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

    return AffineOp(p, sample)


@AUGMENTS.register("brightness")
def brightness(*, p: float, range: float) -> PixelOp:  # noqa: A002
    lo, hi = 1 - range, 1 + range

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        alpha = torch.where(m, _uniform(len(m), lo, hi, g), torch.ones(len(m)))  # I * alpha
        return (x * alpha.to(x.device).view(-1, 1, 1, 1)).clamp_(0, 1)

    return PixelOp(p, apply)


@AUGMENTS.register("contrast")
def contrast(*, p: float, range: float) -> PixelOp:  # noqa: A002
    lo, hi = 1 - range, 1 + range

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        alpha = torch.where(m, _uniform(len(m), lo, hi, g), torch.ones(len(m))).to(x.device).view(-1, 1, 1, 1)
        mu = x.mean(dim=(1, 2, 3), keepdim=True)  # alpha * (I - mu) + mu
        return (alpha * (x - mu) + mu).clamp_(0, 1)

    return PixelOp(p, apply)


@AUGMENTS.register("saturation")
def saturation(*, p: float, range: float) -> PixelOp:  # noqa: A002
    """Blend with the luma by a factor in [1 - range, 1 + range]; gray images have no saturation to change."""
    lo, hi = 1 - range, 1 + range

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        factor = torch.where(m, _uniform(len(m), lo, hi, g), torch.ones(len(m)))
        return x if x.shape[1] == 1 else blend(x, gray(x), factor)

    return PixelOp(p, apply)


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
    return _hsv_to_rgb((h + per_sample(shift, x).squeeze(1)).remainder_(1), s, v)


@AUGMENTS.register("hue")
def hue(*, p: float, range: float) -> PixelOp:  # noqa: A002
    """Shift the hue by a fraction in [-range, range] of the colour wheel (torchvision's adjust_hue, per sample)."""
    r = range

    def apply(x: torch.Tensor, m: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        shift = _uniform(len(m), -r, r, g)
        return x if x.shape[1] == 1 else on_subset(x, m, lambda s, i: _shift_hue(s, shift[i]))

    return PixelOp(p, apply)


def _box_mask(top: torch.Tensor, left: torch.Tensor, h: torch.Tensor, w: torch.Tensor, x: torch.Tensor
              ) -> torch.Tensor:
    """(N, 1, H, W) bool, True inside each sample's box, built on x's device by broadcasting."""
    rows = torch.arange(x.shape[-2], device=x.device).view(1, 1, -1, 1)
    cols = torch.arange(x.shape[-1], device=x.device).view(1, 1, 1, -1)
    top, left, h, w = (t.to(x.device).view(-1, 1, 1, 1) for t in (top, left, h, w))
    return (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)


@AUGMENTS.register("random_erasing")
def random_erasing(*, p: float, scale: tuple[float, float], ratio: tuple[float, float],
                   value: float | str) -> PixelOp:
    """torchvision's RandomErasing: a rectangle of `scale` of the area and `ratio` height/width is filled with
    `value` (a gray level) or 'noise' (uniform per pixel, timm's mode 'pixel' in [0, 1] units)."""
    area = scale
    log_ratio = tuple(math.log(r) for r in ratio)
    noise = value == "noise"
    fill = 0.0 if noise else value

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

        return on_subset(x, m & fits.any(1), erase)

    return PixelOp(p, apply)


@AUGMENTS.register("mixup")
def mixup(*, alpha: float) -> MixOp:
    """MixUp of the batch with itself reversed, lambda ~ Beta(alpha, alpha); see imgcls_cli.data.mix."""
    return MixOp("mixup", alpha)


@AUGMENTS.register("cutmix")
def cutmix(*, alpha: float) -> MixOp:
    """CutMix of the batch with itself reversed, box area from Beta(alpha, alpha); see imgcls_cli.data.mix."""
    return MixOp("cutmix", alpha)


def tv_functional() -> Any:
    """torchvision.transforms.v2.functional, imported on first use (torchvision costs ~1.5 s to import)."""
    import torchvision.transforms.v2.functional as functional

    return functional

