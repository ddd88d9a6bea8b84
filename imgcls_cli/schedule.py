"""LR schedules as factors of the base LR at time t (in epochs, fractional), stepped every iteration."""
from __future__ import annotations

import math
from typing import Callable

import torch

from imgcls_cli.registry import Registry
from imgcls_cli.specs.schedule import ScheduleSpec

SCHEDULES: Registry = Registry("schedule")
Factor = Callable[[float], float]


def _cosine_between(start: float, end: float, progress: float) -> float:
    """From start at progress 0 to end at progress 1 along half a cosine: flat at both ends, steepest midway."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULES.register("constant")
def constant(*, epochs: int) -> Factor:
    return lambda t: 1.0


@SCHEDULES.register("step")
def step(*, epochs: int, step_size: float, gamma: float) -> Factor:
    """lr0 * gamma ** floor(t / step_size)"""
    return lambda t: gamma ** math.floor(t / step_size + 1e-9)


@SCHEDULES.register("multistep")
def multistep(*, epochs: int, milestones: list[float], gamma: float) -> Factor:
    """lr0 * gamma ** (number of milestones <= t): drops at chosen epochs, as the ResNet recipe does."""
    return lambda t: gamma ** sum(t + 1e-9 >= m for m in milestones)


@SCHEDULES.register("exponential")
def exponential(*, epochs: int, k: float) -> Factor:
    """lr0 * exp(-k t): the lr shrinks by the same factor e^-k every epoch, smoothly within it."""
    return lambda t: math.exp(-k * t)


@SCHEDULES.register("cosine")
def cosine(*, epochs: int, min_lr_ratio: float) -> Factor:
    """lr_min + 1/2 (lr_max - lr_min)(1 + cos(pi t / T)), as a fraction of lr_max."""
    total = max(float(epochs), 1e-9)
    return lambda t: _cosine_between(1.0, min_lr_ratio, min(t, total) / total)


@SCHEDULES.register("onecycle")
def onecycle(*, epochs: int, pct_start: float, start_ratio: float, final_ratio: float) -> Factor:
    """OneCycleLR's shape (Smith & Topin 2018): by cosine from start_ratio up to 1 over pct_start of the run, then
    down to final_ratio. The long stretch at a high lr regularizes; the final anneal settles the weights."""
    total = max(float(epochs), 1e-9)
    peak = pct_start * total

    def factor(t: float) -> float:
        t = min(t, total)
        if t < peak:
            return _cosine_between(start_ratio, 1.0, t / peak)
        return _cosine_between(1.0, final_ratio, (t - peak) / (total - peak))

    return factor


def build_schedule(spec: ScheduleSpec, epochs: int) -> Factor:
    """The LR factor over the whole run: linear warmup over warmup_epochs, then the named schedule."""
    warmup = spec.warmup_epochs
    after = SCHEDULES.get(spec.name)(epochs=max(epochs - warmup, 0), **spec.params)
    if warmup == 0:
        return after
    return lambda t: min(1.0, (t + 1e-9) / warmup) if t < warmup else after(t - warmup)


def lr_scheduler(optimizer: torch.optim.Optimizer, factor: Factor, iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: factor(it / iters_per_epoch))
