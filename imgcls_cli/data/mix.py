"""Batch-level MixUp and CutMix, as timm's Mixup in its 'batch' mode.

A batch is mixed with itself reversed (sample i with sample N-1-i), so one lambda and one box serve the
whole batch and no second batch is loaded. Targets become soft: lambda on a sample's own class, 1 - lambda
on its partner's. Lambda ~ Beta(alpha, alpha) needs Gamma draws, which torch cannot take from a given
generator; the draws come from a numpy generator seeded by one draw of the CPU torch generator, so the mix
stays a function of the seed on any device.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class Mixer:
    """MixUp and/or CutMix of whole batches; `mixer(x, y, gen) -> (x_mixed, soft_targets)`.

    mix_prob: probability that a batch is mixed at all (else it passes untouched with one-hot targets).
    switch_prob: probability of CutMix instead of MixUp when both alphas are > 0. An alpha of 0 turns its
    method off. Build it with `BatchAugment.mixer(num_classes)`, which checks the config values.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, mix_prob: float, switch_prob: float,
                 num_classes: int) -> None:
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.mix_prob, self.switch_prob, self.num_classes = mix_prob, switch_prob, num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, H, W) float, y (N,) class indices or (N, K) multi-hot rows -> mixed x (a new tensor) and float32
        (N, K) targets (multi-hot rows mix alike: lambda of a sample's own labels, 1 - lambda of its partner's)."""
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
        targets = y.float() if y.ndim == 2 else F.one_hot(y, self.num_classes).float()
        method, lam = self._draw(rng)
        if method is None:
            return x, targets
        if method == "cutmix":
            x, lam = _cutmix(x, lam, rng)
        else:
            x = x * lam + x.flip(0) * (1 - lam)
        return x, targets * lam + targets.flip(0) * (1 - lam)

    def _draw(self, rng: np.random.Generator) -> tuple[str | None, float]:
        """The method of this batch (None: not mixed) and its lambda, by timm's rules."""
        if not (self.mixup_alpha > 0 or self.cutmix_alpha > 0) or rng.random() >= self.mix_prob:
            return None, 1.0
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return ("cutmix" if use_cutmix else "mixup"), float(rng.beta(alpha, alpha))


def _cutmix(x: torch.Tensor, lam: float, rng: np.random.Generator) -> tuple[torch.Tensor, float]:
    """Paste a box of the reversed batch, sized for an area of 1 - lam and centred anywhere in the image.

    Clipping at the border shrinks the box, so lambda is recomputed from the area actually pasted.
    """
    height, width = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * cut) // 2, int(width * cut) // 2
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - half_h, 0), min(cy + half_h, height)
    left, right = max(cx - half_w, 0), min(cx + half_w, width)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[..., top:bottom, left:right].flip(0)
    return mixed, 1.0 - (bottom - top) * (right - left) / (height * width)
