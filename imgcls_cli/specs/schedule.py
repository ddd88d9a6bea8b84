"""ScheduleSpec: the schedule group checked once (warmup and the named schedule's parameters).

Each schedule option has a checker here with the option's own keys and defaults; it returns the checked values
that imgcls_cli.schedule builds the LR factor from. The checkers' names are the schedule registry's names (a test
holds the two lists equal).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from imgcls_cli.errors import UserError, as_float, shown
from imgcls_cli.registry import Registry
from imgcls_cli.specs.optimizer import checked

OPTIONS: Registry[Callable[..., dict[str, Any]]] = Registry("schedule")


def _gamma(value: object) -> float:
    """The factor of each drop: above 1 the lr would grow at every drop, without bound."""
    gamma = checked(value, "schedule.gamma", lambda x: 0 < x < math.inf, "positive")
    if gamma > 1:
        raise UserError(f"schedule.gamma must be in (0, 1] (the lr is multiplied by it at each drop), not {shown(value)}.")
    return gamma


def _ratio(value: object, key: str) -> float:
    """A fraction of the base lr that the schedule reaches."""
    return checked(value, key, lambda x: 0 <= x <= 1, "in [0, 1]")


@OPTIONS.register("constant")
def constant(**_: Any) -> dict[str, Any]:
    return {}


@OPTIONS.register("step")
def step(*, step_size: Any = 5, gamma: Any = 0.1, **_: Any) -> dict[str, Any]:
    return {"step_size": checked(step_size, "schedule.step_size", lambda x: 0 < x < math.inf, "positive"),
            "gamma": _gamma(gamma)}


@OPTIONS.register("multistep")
def multistep(*, milestones: Any = (30, 60), gamma: Any = 0.1, **_: Any) -> dict[str, Any]:
    if isinstance(milestones, str) or not isinstance(milestones, Sequence):
        raise UserError(f"schedule.milestones must be a list of epochs, not {shown(milestones)}.")
    points = [checked(m, "schedule.milestones", lambda x: 0 <= x < math.inf, "epochs >= 0") for m in milestones]
    return {"milestones": points, "gamma": _gamma(gamma)}


@OPTIONS.register("exponential")
def exponential(*, k: Any = 0.1, **_: Any) -> dict[str, Any]:
    return {"k": checked(k, "schedule.k", lambda x: 0 <= x < math.inf, ">= 0")}


@OPTIONS.register("cosine")
def cosine(*, min_lr_ratio: Any = 0.0, **_: Any) -> dict[str, Any]:
    return {"min_lr_ratio": _ratio(min_lr_ratio, "schedule.min_lr_ratio")}


@OPTIONS.register("onecycle")
def onecycle(*, pct_start: Any = 0.3, start_ratio: Any = 1 / 25, final_ratio: Any = 1 / 25e4,
             **_: Any) -> dict[str, Any]:
    return {"pct_start": checked(pct_start, "schedule.pct_start", lambda x: 0 <= x < 1, "in [0, 1)"),
            "start_ratio": checked(start_ratio, "schedule.start_ratio", lambda x: 0 < x <= 1, "in (0, 1]"),
            "final_ratio": _ratio(final_ratio, "schedule.final_ratio")}


@dataclass(frozen=True)
class ScheduleSpec:
    """A checked schedule config: linear warmup over warmup_epochs, then the named schedule with its parameters."""

    name: str
    warmup_epochs: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, cfg: dict[str, Any]) -> ScheduleSpec:
        cfg = dict(cfg)
        name = cfg.pop("name")
        warmup = as_float(cfg.pop("warmup_epochs", 0) or 0, "schedule.warmup_epochs")
        if not 0 <= warmup < math.inf:
            raise UserError(f"schedule.warmup_epochs must be >= 0, not {shown(warmup)}.")
        return cls(str(name), warmup, OPTIONS.get(name)(**cfg))
