"""Batch-wise augmentation on the training device: the ops of one augment config, applied in config order.

The ops are registered by name (data/augment_ops.py: flips, affine, colour, erasing; data/autoaugment.py:
RandAugment, TrivialAugmentWide); their settings are checked once into an AugmentSpec (specs/augment.py).
Rotation, scale, translation and random resized crop compose into one affine warp per batch (a single
interpolation).

MixUp and CutMix are configured in the same group (`mixup`, `cutmix`, `mix_prob`, `switch_prob`) but
mix labels too, so the training loop applies them apart from the per-image ops: see `BatchAugment.mixer`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from imgcls_cli.data import autoaugment  # noqa: F401  (registers randaugment and trivialaugment)
from imgcls_cli.data.augment_ops import AUGMENTS, AffineOp, PixelOp, affine_theta, chosen, resample
from imgcls_cli.data.mix import Mixer
from imgcls_cli.specs.augment import MIX_SETTINGS, AugmentSpec

__all__ = ["AUGMENTS", "MIX_SETTINGS", "BatchAugment", "build_augment"]


class BatchAugment:
    """The ops of one AugmentSpec, applied in config order (affine ops gathered into one warp first).

    Mixing is not part of __call__: it needs the labels and the class count, which the training loop has.
    Get it with `mixer(num_classes)` and call it on each batch after the per-image ops (and normalization);
    `mix_params` holds the checked mixing settings it is built from.
    """

    def __init__(self, spec: AugmentSpec) -> None:
        self.affine: list[AffineOp] = []
        self.pixel: list[PixelOp] = []
        self.mix_params = spec.mix_params
        for op_spec in spec.ops:
            op = AUGMENTS.get(op_spec.name)(**op_spec.params)
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
            x = op.apply(x, chosen(len(x), op.p, gen), gen)
        return x

    def _warp(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, size = len(x), (x.shape[-2], x.shape[-1])
        params = {"angle": torch.zeros(n), "scale": torch.ones(n), "tx": torch.zeros(n), "ty": torch.zeros(n),
                  "crop_w": torch.ones(n), "crop_h": torch.ones(n), "crop_x": torch.zeros(n), "crop_y": torch.zeros(n)}
        for op in self.affine:
            mask = chosen(n, op.p, gen)
            for key, value in op.sample(n, gen, size).items():
                params[key] = torch.where(mask, value, params[key])
        cos, sin = torch.cos(params["angle"]), torch.sin(params["angle"])
        s, w, h = params["scale"], params["crop_w"], params["crop_h"]
        # affine_grid maps output to input coordinates: the inverse of "rotate, scale, then shift", then
        # into the crop box, which the crop stretches over the whole image.
        return resample(x, affine_theta(w * cos / s, w * -sin / s, w * -2 * params["tx"] + params["crop_x"],
                                        h * sin / s, h * cos / s, h * -2 * params["ty"] + params["crop_y"]))


def build_augment(spec: AugmentSpec | Mapping[str, Any]) -> BatchAugment:
    """The augmentation of an AugmentSpec (a plain augment config is parsed into one first)."""
    return BatchAugment(spec if isinstance(spec, AugmentSpec) else AugmentSpec.from_config(spec))
