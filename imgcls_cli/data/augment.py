"""Batch-wise augmentation on the training device: each op is registered by name with its probability and range.

Ops work on float images in [0, 1], shape (N, C, H, W). Random draws come from a CPU generator, so the
same seed gives the same augmented batch on any device. Rotation, scale and translation compose into one
affine warp per batch (a single interpolation).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from imgcls_cli.errors import UserError
from imgcls_cli.registry import Registry

AUGMENTS: Registry = Registry("augmentation op")


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, dtype=torch.float64).mul_(hi - lo).add_(lo).float()


def _chosen(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


class AffineOp:
    """Returns per-sample (angle radians, scale, tx, ty); identity where not chosen."""

    def __init__(self, p: float, sample: Callable[[int, torch.Generator], dict[str, torch.Tensor]]) -> None:
        self.p, self.sample = p, sample


class PixelOp:
    def __init__(self, p: float, apply: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]) -> None:
        self.p, self.apply = p, apply


def _probability(name: str, p: Any) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise UserError(f"augment.{name}.p must be a probability in [0, 1], not {p}.")
    return p


@AUGMENTS.register("hflip")
def hflip(p: float = 0.5) -> PixelOp:
    return PixelOp(_probability("hflip", p), lambda x, m, g: torch.where(m.view(-1, 1, 1, 1), x.flip(-1), x))


@AUGMENTS.register("vflip")
def vflip(p: float = 0.5) -> PixelOp:
    return PixelOp(_probability("vflip", p), lambda x, m, g: torch.where(m.view(-1, 1, 1, 1), x.flip(-2), x))


@AUGMENTS.register("rotation")
def rotation(p: float = 0.5, degrees: float = 10.0) -> AffineOp:
    rad = math.radians(float(degrees))
    return AffineOp(_probability("rotation", p), lambda n, g: {"angle": _uniform(n, -rad, rad, g)})


@AUGMENTS.register("scale")
def scale(p: float = 0.5, range: tuple[float, float] = (0.9, 1.1)) -> AffineOp:  # noqa: A002 - config key
    lo, hi = (float(v) for v in range)
    if not 0 < lo <= hi:
        raise UserError(f"augment.scale.range must be two factors 0 < low <= high, not {list(range)}.")
    return AffineOp(_probability("scale", p), lambda n, g: {"scale": _uniform(n, lo, hi, g)})


@AUGMENTS.register("translate")
def translate(p: float = 0.5, fraction: float = 0.1) -> AffineOp:
    f = float(fraction)
    if not 0 <= f < 1:
        raise UserError(f"augment.translate.fraction must be in [0, 1), not {f}.")
    return AffineOp(_probability("translate", p), lambda n, g: {"tx": _uniform(n, -f, f, g), "ty": _uniform(n, -f, f, g)})


def _factor_range(name: str, r: Any) -> tuple[float, float]:
    r = float(r)
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


class BatchAugment:
    """The ops of one augment config, applied in config order (affine ops gathered into one warp first)."""

    def __init__(self, ops: dict[str, Any]) -> None:
        self.affine: list[AffineOp] = []
        self.pixel: list[PixelOp] = []
        for name, params in ops.items():
            params = {} if params is None else ({"p": params} if isinstance(params, (int, float)) else dict(params))
            try:
                op = AUGMENTS.get(name)(**params)
            except TypeError as exc:
                raise UserError(f"augment.{name}: {exc}") from None
            (self.affine if isinstance(op, AffineOp) else self.pixel).append(op)

    def __bool__(self) -> bool:
        return bool(self.affine or self.pixel)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.affine:
            x = self._warp(x, gen)
        for op in self.pixel:
            x = op.apply(x, _chosen(len(x), op.p, gen).to(x.device), gen)
        return x

    def _warp(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = len(x)
        params = {"angle": torch.zeros(n), "scale": torch.ones(n), "tx": torch.zeros(n), "ty": torch.zeros(n)}
        for op in self.affine:
            mask = _chosen(n, op.p, gen)
            for key, value in op.sample(n, gen).items():
                params[key] = torch.where(mask, value, params[key])
        cos, sin = torch.cos(params["angle"]), torch.sin(params["angle"])
        s = params["scale"]
        # affine_grid maps output to input coordinates: the inverse of "rotate, scale, then shift".
        theta = torch.stack([
            torch.stack([cos / s, -sin / s, -2 * params["tx"]], dim=1),
            torch.stack([sin / s, cos / s, -2 * params["ty"]], dim=1),
        ], dim=1).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def build_augment(cfg: dict[str, Any]) -> BatchAugment:
    """Build from an augment config: every key but `name` is an op."""
    return BatchAugment({k: v for k, v in cfg.items() if k != "name"})
