"""LR schedules as factors of the base LR at time t (in epochs, fractional), stepped every iteration."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

import torch

from imgcls_cli.errors import UserError, as_float, shown
from imgcls_cli.registry import Registry

SCHEDULES: Registry = Registry("schedule")
Factor = Callable[[float], float]


def _checked(value: object, key: str, ok: Callable[[float], bool], expected: str) -> float:
    """A config number that passes ok, or a one-line UserError naming the key and what it must be."""
    number = as_float(value, key)
    if not ok(number):
        raise UserError(f"{key} must be {expected}, not {shown(value)}.")
    return number


def _gamma(value: object) -> float:
    """The factor of each drop: above 1 the lr would grow at every drop, without bound."""
    gamma = _checked(value, "schedule.gamma", lambda x: 0 < x < math.inf, "positive")
    if gamma > 1:
        raise UserError(f"schedule.gamma must be in (0, 1] (the lr is multiplied by it at each drop), not {shown(value)}.")
    return gamma


def _ratio(value: object, key: str) -> float:
    """A fraction of the base lr that the schedule reaches."""
    return _checked(value, key, lambda x: 0 <= x <= 1, "in [0, 1]")


def _cosine_between(start: float, end: float, progress: float) -> float:
    """From start at progress 0 to end at progress 1 along half a cosine: flat at both ends, steepest midway."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULES.register("constant")
def constant(*, epochs: int, **_: Any) -> Factor:
    return lambda t: 1.0


@SCHEDULES.register("step")
def step(*, epochs: int, step_size: float = 5, gamma: float = 0.1, **_: Any) -> Factor:
    """lr0 * gamma ** floor(t / step_size)"""
    step_size = _checked(step_size, "schedule.step_size", lambda x: 0 < x < math.inf, "positive")
    gamma = _gamma(gamma)
    return lambda t: gamma ** math.floor(t / step_size + 1e-9)


@SCHEDULES.register("multistep")
def multistep(*, epochs: int, milestones: Sequence[float] = (30, 60), gamma: float = 0.1, **_: Any) -> Factor:
    """lr0 * gamma ** (number of milestones <= t): drops at chosen epochs, as the ResNet recipe does."""
    if isinstance(milestones, str) or not isinstance(milestones, Sequence):
        raise UserError(f"schedule.milestones must be a list of epochs, not {shown(milestones)}.")
    points = [_checked(m, "schedule.milestones", lambda x: 0 <= x < math.inf, "epochs >= 0") for m in milestones]
    gamma = _gamma(gamma)
    return lambda t: gamma ** sum(t + 1e-9 >= m for m in points)


@SCHEDULES.register("exponential")
def exponential(*, epochs: int, k: float = 0.1, **_: Any) -> Factor:
    """lr0 * exp(-k t): the lr shrinks by the same factor e^-k every epoch, smoothly within it."""
    k = _checked(k, "schedule.k", lambda x: 0 <= x < math.inf, ">= 0")
    return lambda t: math.exp(-k * t)


@SCHEDULES.register("cosine")
def cosine(*, epochs: int, min_lr_ratio: float = 0.0, **_: Any) -> Factor:
    """lr_min + 1/2 (lr_max - lr_min)(1 + cos(pi t / T)), as a fraction of lr_max."""
    total = max(float(epochs), 1e-9)
    min_lr_ratio = _ratio(min_lr_ratio, "schedule.min_lr_ratio")
    return lambda t: _cosine_between(1.0, min_lr_ratio, min(t, total) / total)


@SCHEDULES.register("onecycle")
def onecycle(*, epochs: int, pct_start: float = 0.3, start_ratio: float = 1 / 25, final_ratio: float = 1 / 25e4,
             **_: Any) -> Factor:
    """OneCycleLR's shape (Smith & Topin 2018): by cosine from start_ratio up to 1 over pct_start of the run, then
    down to final_ratio. The long stretch at a high lr regularizes; the final anneal settles the weights."""
    total = max(float(epochs), 1e-9)
    peak = _checked(pct_start, "schedule.pct_start", lambda x: 0 <= x < 1, "in [0, 1)") * total
    start_ratio = _checked(start_ratio, "schedule.start_ratio", lambda x: 0 < x <= 1, "in (0, 1]")
    final_ratio = _ratio(final_ratio, "schedule.final_ratio")

    def factor(t: float) -> float:
        t = min(t, total)
        if t < peak:
            return _cosine_between(start_ratio, 1.0, t / peak)
        return _cosine_between(1.0, final_ratio, (t - peak) / (total - peak))

    return factor


def build_schedule(cfg: dict[str, Any], epochs: int) -> Factor:
    """The LR factor over the whole run: linear warmup over warmup_epochs, then the named schedule."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    warmup = as_float(cfg.pop("warmup_epochs", 0) or 0, "schedule.warmup_epochs")
    if not 0 <= warmup < math.inf:
        raise UserError(f"schedule.warmup_epochs must be >= 0, not {shown(warmup)}.")
    after = SCHEDULES.get(name)(epochs=max(epochs - warmup, 0), **cfg)
    if warmup == 0:
        return after
    return lambda t: min(1.0, (t + 1e-9) / warmup) if t < warmup else after(t - warmup)


def lr_scheduler(optimizer: torch.optim.Optimizer, factor: Factor, iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: factor(it / iters_per_epoch))
