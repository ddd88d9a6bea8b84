"""LR schedules as factors of the base LR at time t (in epochs, fractional), stepped every iteration."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from imgcls_cli.errors import UserError, as_float
from imgcls_cli.registry import Registry

SCHEDULES: Registry = Registry("schedule")
Factor = Callable[[float], float]


@SCHEDULES.register("constant")
def constant(*, epochs: int, **_: Any) -> Factor:
    return lambda t: 1.0


@SCHEDULES.register("step")
def step(*, epochs: int, step_size: float = 5, gamma: float = 0.1, **_: Any) -> Factor:
    """lr0 * gamma ** floor(t / step_size)"""
    step_size, gamma = as_float(step_size, "schedule.step_size"), as_float(gamma, "schedule.gamma")
    if step_size <= 0:
        raise UserError(f"schedule.step_size must be positive, not {step_size}.")
    return lambda t: gamma ** math.floor(t / step_size + 1e-9)


@SCHEDULES.register("cosine")
def cosine(*, epochs: int, min_lr_ratio: float = 0.0, **_: Any) -> Factor:
    """lr_min + 1/2 (lr_max - lr_min)(1 + cos(pi t / T)), as a fraction of lr_max."""
    total = max(float(epochs), 1e-9)
    min_lr_ratio = as_float(min_lr_ratio, "schedule.min_lr_ratio")
    return lambda t: min_lr_ratio + 0.5 * (1 - min_lr_ratio) * (1 + math.cos(math.pi * min(t, total) / total))


def build_schedule(cfg: dict[str, Any], epochs: int) -> Factor:
    """The LR factor over the whole run: linear warmup over warmup_epochs, then the named schedule."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    warmup = as_float(cfg.pop("warmup_epochs", 0) or 0, "schedule.warmup_epochs")
    if warmup < 0:
        raise UserError(f"schedule.warmup_epochs must be >= 0, not {warmup}.")
    after = SCHEDULES.get(name)(epochs=max(epochs - warmup, 0), **cfg)
    if warmup == 0:
        return after
    return lambda t: min(1.0, (t + 1e-9) / warmup) if t < warmup else after(t - warmup)


def lr_scheduler(optimizer: torch.optim.Optimizer, factor: Factor, iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: factor(it / iters_per_epoch))
