"""Multi-label losses on logits (N, C) and multi-hot targets (N, C), hard or soft (MixUp/CutMix-mixed): binary
cross-entropy and the asymmetric loss of Ridnik et al. 2021; LOSSES names their builders.

Both compute in fp32 whatever autocast is active: sigmoid, log and the focusing powers lose too much in bf16.
Label smoothing maps a target y to y (1 - eps) + eps / 2 (towards 0.5: each label is its own two-class problem)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imgcls_cli.registry import Registry

MAX_POS_WEIGHT = 100.0  # pos_weight_from's cap: a label seen once in 10,000 images must not drown the others


def smooth_targets(targets: Tensor, smoothing: float) -> Tensor:
    """y (1 - smoothing) + smoothing / 2: 1 becomes 1 - smoothing/2 and 0 becomes smoothing/2."""
    return targets * (1.0 - smoothing) + smoothing / 2 if smoothing else targets


def _fp32(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if logits.shape != targets.shape:
        raise ValueError(f"logits and targets must have one shape, got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    return logits.float(), targets.float()


def _check(smoothing: float, gamma_pos: float = 0.0, gamma_neg: float = 0.0, clip: float = 0.0) -> None:
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if gamma_pos < 0 or gamma_neg < 0:
        raise ValueError(f"gamma_pos and gamma_neg must be >= 0, got {gamma_pos} and {gamma_neg}")
    if not 0.0 <= clip < 1.0:
        raise ValueError(f"clip must be in [0, 1), got {clip}")


class MultilabelBCE(nn.Module):
    """BCEWithLogits, mean over labels and images (torch's default reduction), on smoothed targets; pos_weight
    (C,) multiplies each label's positive term."""

    def __init__(self, pos_weight: Tensor | None = None, smoothing: float = 0.0) -> None:
        super().__init__()
        _check(smoothing)
        self.smoothing = float(smoothing)
        self.register_buffer("pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight).float(),
                             persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            logits, targets = _fp32(logits, targets)
            return F.binary_cross_entropy_with_logits(logits, smooth_targets(targets, self.smoothing),
                                                      pos_weight=self.pos_weight)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label Classification"), per label:

        -[ y (1 - p)^gamma_pos log p  +  (1 - y) p_m^gamma_neg log(1 - p_m) ],   p = sigmoid(logit),
        p_m = max(p - clip, 0)  (probability shifting: easy negatives, p < clip, count nothing)

    summed over labels and averaged over images. The paper's code returns the sum over the batch too; the mean
    over images keeps the loss's scale, and so the learning rate, independent of the batch size. Soft targets
    weight the positive term by y and the negative term by 1 - y. With gamma_pos = gamma_neg = clip = 0 this is
    BCE summed over labels (C times MultilabelBCE).

    log p is log-sigmoid, exact at any logit, where the paper's code takes log(max(p, eps)), whose gradient
    vanishes for a confidently missed positive. eps floors the focusing weights' bases (so a power below 1 keeps
    a finite gradient at 0) and 1 - p_m inside the log."""

    def __init__(self, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8,
                 pos_weight: Tensor | None = None, smoothing: float = 0.0) -> None:
        super().__init__()
        _check(smoothing, gamma_pos, gamma_neg, clip)
        self.gamma_pos, self.gamma_neg = float(gamma_pos), float(gamma_neg)
        self.clip, self.eps, self.smoothing = float(clip), float(eps), float(smoothing)
        self.register_buffer("pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight).float(),
                             persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            logits, targets = _fp32(logits, targets)
            y = smooth_targets(targets, self.smoothing)
            p, one_minus_p = torch.sigmoid(logits), torch.sigmoid(-logits)  # 1 - p without cancellation near 1
            positive = F.logsigmoid(logits)
            if self.gamma_pos:
                positive = positive * one_minus_p.clamp(min=self.eps).pow(self.gamma_pos)
            if self.pos_weight is not None:
                positive = positive * self.pos_weight
            if self.clip:
                p_m = (p - self.clip).clamp(min=0.0)
                negative = (one_minus_p + self.clip).clamp(min=self.eps, max=1.0).log()  # log(1 - p_m)
            else:
                p_m, negative = p, F.logsigmoid(-logits)
            if self.gamma_neg:
                negative = negative * p_m.clamp(min=self.eps).pow(self.gamma_neg)
            return -(y * positive + (1.0 - y) * negative).sum(dim=1).mean()


def pos_weight_from(targets: Tensor | np.ndarray, max_weight: float = MAX_POS_WEIGHT) -> Tensor:
    """Per label, negatives / positives over the rows of targets (N, C), clipped to [1, max_weight]; a label
    without positives gets 1. For BCE's pos_weight (`dataset.class_weights=auto`): a rare label's misses cost as
    much in total as its many negatives, and a common label is never down-weighted."""
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    if targets.ndim != 2:
        raise ValueError(f"targets must be (N, C), got shape {tuple(targets.shape)}")
    positives = targets.sum(dim=0)
    negatives = targets.shape[0] - positives
    ratio = torch.where(positives > 0, negatives / positives.clamp(min=1e-12), torch.ones_like(positives))
    return ratio.clamp(1.0, float(max_weight)).float()


LossBuilder = Callable[..., nn.Module]
LOSSES: Registry[LossBuilder] = Registry("loss")


@LOSSES.register("bce")
def bce(*, pos_weight: Tensor | None = None, smoothing: float = 0.0, gamma_pos: float = 0.0,
        gamma_neg: float = 0.0, clip: float = 0.0) -> nn.Module:
    """MultilabelBCE; gamma_pos, gamma_neg and clip are the asymmetric loss's and unused here."""
    return MultilabelBCE(pos_weight=pos_weight, smoothing=smoothing)


@LOSSES.register("asl")
def asl(*, pos_weight: Tensor | None = None, smoothing: float = 0.0, gamma_pos: float = 0.0,
        gamma_neg: float = 4.0, clip: float = 0.05) -> nn.Module:
    """AsymmetricLoss with the paper's defaults (gamma_pos 0, gamma_neg 4, clip 0.05)."""
    return AsymmetricLoss(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, pos_weight=pos_weight,
                          smoothing=smoothing)
