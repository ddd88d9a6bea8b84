"""OptimizerSpec: the optimizer group checked once, the training loop's keys (clipping, accumulation, L1/L2) included.

Each optimizer option has a checker here with the option's own keys and defaults; it returns the checked values
that imgcls_cli.optim builds the torch optimizer from. The checkers' names are the optimizer registry's names (a
test holds the two lists equal).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from imgcls_cli.errors import UserError, as_float, as_int, shown
from imgcls_cli.registry import Registry

OPTIONS: Registry[Callable[..., dict[str, Any]]] = Registry("optimizer")
REFERENCE_BATCH_SIZE = 256  # optimizer.base_lr is the lr for this many images per optimizer step
# Keys every optimizer takes, handled by the optimizer's parameter groups or by the training loop; the other keys
# are the option's own.
SHARED_KEYS = ("lr", "base_lr", "weight_decay", "decay_norm_and_bias", "l1", "l2", "grad_clip_norm",
               "accumulate_steps", "scale_lr_with_world_size")


def checked(value: object, key: str, ok: Callable[[float], bool], expected: str) -> float:
    """A config number that passes ok, or a one-line UserError naming the key and what it must be."""
    number = as_float(value, key)
    if not ok(number):
        raise UserError(f"{key} must be {expected}, not {shown(value)}.")
    return number


def positive(value: object, key: str) -> float:
    return checked(value, key, lambda x: 0 < x < math.inf, "positive")


def non_negative(value: object, key: str) -> float:
    return checked(value, key, lambda x: 0 <= x < math.inf, ">= 0")


def flag(value: object, key: str) -> bool:
    """A yes/no key; a string such as 'false' would otherwise count as true."""
    if not isinstance(value, bool):
        raise UserError(f"{key} must be true or false, not {shown(value)}.")
    return value


def _fraction(value: object, key: str) -> float:
    """A decay rate of a running average: 1 would freeze the average at its start."""
    return checked(value, key, lambda x: 0 <= x < 1, "in [0, 1)")


def _momentum(value: object) -> float:
    """The decay of the momentum buffer: at 1 or more past gradients never fade and the steps grow without bound."""
    momentum = non_negative(value, "optimizer.momentum")
    if momentum >= 1:
        raise UserError(f"optimizer.momentum must be in [0, 1) (0.9 is usual), not {shown(value)}.")
    return momentum


def _weight_decay(value: object) -> float:
    """The pull of each weight toward 0, per unit of lr: above 1 it outweighs any gradient."""
    weight_decay = non_negative(value, "optimizer.weight_decay")
    if weight_decay > 1:
        raise UserError(f"optimizer.weight_decay must be in [0, 1] (5e-4 is usual for sgd, 0.05 for adamw), "
                        f"not {shown(value)}.")
    return weight_decay


def _betas(value: object) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise UserError(f"optimizer.betas must be two numbers in [0, 1), not {shown(value)}.")
    return _fraction(value[0], "optimizer.betas"), _fraction(value[1], "optimizer.betas")


@OPTIONS.register("sgd")
def sgd(*, momentum: Any = 0.9, nesterov: Any = False, **_: Any) -> dict[str, Any]:
    return {"momentum": _momentum(momentum), "nesterov": flag(nesterov, "optimizer.nesterov")}


@OPTIONS.register("adam")
def adam(*, betas: Any = (0.9, 0.999), eps: Any = 1e-8, **_: Any) -> dict[str, Any]:
    return {"betas": _betas(betas), "eps": positive(eps, "optimizer.eps")}


OPTIONS.register("adamw")(adam)  # Adam's keys; only where weight decay applies differs


@OPTIONS.register("rmsprop")
def rmsprop(*, alpha: Any = 0.99, eps: Any = 1e-8, momentum: Any = 0.0, centered: Any = False,
            **_: Any) -> dict[str, Any]:
    return {"alpha": _fraction(alpha, "optimizer.alpha"), "eps": positive(eps, "optimizer.eps"),
            "momentum": _momentum(momentum), "centered": flag(centered, "optimizer.centered")}


@dataclass(frozen=True)
class OptimizerSpec:
    """A checked optimizer config: the option, its lr rule, where weight decay and the penalties apply, what the
    loop does between backward and step (clip the global gradient norm, None: no clipping; step once every
    accumulate_steps batches), and the option's own keys (kwargs)."""

    name: str
    lr: float | None  # None when base_lr sets the lr
    base_lr: float | None
    scale_lr_with_world_size: bool
    grad_clip_norm: float | None
    accumulate_steps: int
    l1: float
    l2: float
    weight_decay: float
    decay_norm_and_bias: bool
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, cfg: dict[str, Any]) -> OptimizerSpec:
        checker = OPTIONS.get(cfg["name"])
        scale = flag(cfg.get("scale_lr_with_world_size", False), "optimizer.scale_lr_with_world_size")
        base_lr = cfg.get("base_lr")
        lr = positive(cfg.get("lr"), "optimizer.lr") if base_lr is None else None
        base_lr = None if base_lr is None else positive(base_lr, "optimizer.base_lr")
        clip = cfg.get("grad_clip_norm")
        clip = None if clip is None else positive(clip, "optimizer.grad_clip_norm")
        accumulate = as_int(cfg.get("accumulate_steps", 1), "optimizer.accumulate_steps", minimum=1)
        l1, l2 = non_negative(cfg.get("l1", 0.0), "optimizer.l1"), non_negative(cfg.get("l2", 0.0), "optimizer.l2")
        kwargs = checker(**{key: value for key, value in cfg.items() if key not in ("name", *SHARED_KEYS)})
        return cls(str(cfg["name"]), lr, base_lr, scale, clip, accumulate, l1, l2,
                   _weight_decay(cfg.get("weight_decay", 0.0)),
                   flag(cfg.get("decay_norm_and_bias", False), "optimizer.decay_norm_and_bias"), kwargs)

    def lr_for(self, batch_size: int | None, world_size: int = 1) -> float:
        """The lr to train with: optimizer.lr, or, when optimizer.base_lr is set, base_lr x images per step / 256;
        times world_size with optimizer.scale_lr_with_world_size=true (data-parallel processes, each batch_size).

        The linear scaling rule (Goyal et al. 2017, as timm applies it) keeps the step per image the same, so one
        base_lr serves every batch size; a given lr is then ignored. An optimizer step sees batch_size x
        accumulate_steps images in each of the world_size processes.
        """
        factor = world_size if self.scale_lr_with_world_size else 1
        if self.base_lr is None:
            assert self.lr is not None
            return self.lr * factor
        if batch_size is None:
            raise ValueError("optimizer.base_lr scales with the batch size: pass batch_size to build_optimizer")
        images = as_int(batch_size, "batch_size", minimum=1) * self.accumulate_steps
        return self.base_lr * images / REFERENCE_BATCH_SIZE * factor
