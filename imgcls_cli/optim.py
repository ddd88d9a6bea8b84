"""Optimizer registry, explicit L1/L2 penalties and the training loop's optimizer options.

Weight decay and the penalties skip biases and norm parameters (1-D tensors) by default, as timm does: pulling a
bias or a BatchNorm scale toward 0 does not make the function simpler, it only fights the normalization.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from imgcls_cli.errors import UserError, as_float, as_int, shown
from imgcls_cli.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
REFERENCE_BATCH_SIZE = 256  # optimizer.base_lr is the lr for this many images per optimizer step
# Keys every optimizer takes, handled here or by the training loop; the other keys are the builder's own.
SHARED_KEYS = ("lr", "base_lr", "weight_decay", "decay_norm_and_bias", "l1", "l2", "grad_clip_norm",
             "accumulate_steps", "scale_lr_with_world_size")


def _checked(value: object, key: str, ok: Callable[[float], bool], expected: str) -> float:
    """A config number that passes ok, or a one-line UserError naming the key and what it must be."""
    number = as_float(value, key)
    if not ok(number):
        raise UserError(f"{key} must be {expected}, not {shown(value)}.")
    return number


def _positive(value: object, key: str) -> float:
    return _checked(value, key, lambda x: 0 < x < math.inf, "positive")


def _non_negative(value: object, key: str) -> float:
    return _checked(value, key, lambda x: 0 <= x < math.inf, ">= 0")


def _fraction(value: object, key: str) -> float:
    """A decay rate of a running average: 1 would freeze the average at its start."""
    return _checked(value, key, lambda x: 0 <= x < 1, "in [0, 1)")


def _momentum(value: object) -> float:
    """The decay of the momentum buffer: at 1 or more past gradients never fade and the steps grow without bound."""
    momentum = _non_negative(value, "optimizer.momentum")
    if momentum >= 1:
        raise UserError(f"optimizer.momentum must be in [0, 1) (0.9 is usual), not {shown(value)}.")
    return momentum


def _weight_decay(value: object) -> float:
    """The pull of each weight toward 0, per unit of lr: above 1 it outweighs any gradient."""
    weight_decay = _non_negative(value, "optimizer.weight_decay")
    if weight_decay > 1:
        raise UserError(f"optimizer.weight_decay must be in [0, 1] (5e-4 is usual for sgd, 0.05 for adamw), "
                        f"not {shown(value)}.")
    return weight_decay


def _flag(value: object, key: str) -> bool:
    """A yes/no key; a string such as 'false' would otherwise count as true."""
    if not isinstance(value, bool):
        raise UserError(f"{key} must be true or false, not {shown(value)}.")
    return value


def _betas(value: object) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise UserError(f"optimizer.betas must be two numbers in [0, 1), not {shown(value)}.")
    return _fraction(value[0], "optimizer.betas"), _fraction(value[1], "optimizer.betas")


def _split(model: nn.Module, decay_norm_and_bias: bool) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """The trainable parameters as (decayed and penalized, exempt)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if decay_norm_and_bias or p.ndim > 1 else no_decay).append(p)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False,
                 lr: float | None = None, lr_mult: Callable[[str], float] | None = None) -> list[dict[str, Any]]:
    """torch param groups: weight decay on the decayed parameters, none on the exempt ones; with lr_mult (a
    factor per parameter name), parameters whose factor is not 1 get their own groups at lr x factor."""
    groups: dict[tuple[bool, float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            mult = lr_mult(name) if lr_mult is not None else 1.0
            exempt = not (decay_norm_and_bias or p.ndim > 1)
            groups.setdefault((mult != 1.0, mult, exempt), []).append(p)
    result = []
    for (_, mult, exempt), params in sorted(groups.items()):  # the lr x 1 groups first: they are the run's lr
        group: dict[str, Any] = {"params": params, "weight_decay": 0.0 if exempt else weight_decay}
        if mult != 1.0:
            group["lr"] = mult * (lr if lr is not None else 0.0)
        result.append(group)
    return result or [{"params": [], "weight_decay": weight_decay}]


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], *, lr: float, momentum: float = 0.9, nesterov: bool = False,
        **_: Any) -> torch.optim.Optimizer:
    """buf = momentum buf + g; w -= lr buf (Nesterov: w -= lr (g + momentum buf)); weight decay adds wd w to g."""
    momentum = _momentum(momentum)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum,
                           nesterov=_flag(nesterov, "optimizer.nesterov") and momentum > 0)


@OPTIMIZERS.register("adam")
def adam(groups: list[dict], *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         **_: Any) -> torch.optim.Optimizer:
    """w -= lr m^ / (sqrt(v^) + eps) with bias-corrected moments of g; weight decay adds wd w to g."""
    return torch.optim.Adam(groups, lr=lr, betas=_betas(betas), eps=_positive(eps, "optimizer.eps"))


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          **_: Any) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay: w -= lr wd w, apart from the moments, so decay is not rescaled by v."""
    return torch.optim.AdamW(groups, lr=lr, betas=_betas(betas), eps=_positive(eps, "optimizer.eps"))


@OPTIMIZERS.register("rmsprop")
def rmsprop(groups: list[dict], *, lr: float, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
            centered: bool = False, **_: Any) -> torch.optim.Optimizer:
    """v = alpha v + (1 - alpha) g^2; w -= lr g / (sqrt(v) + eps): each weight's step is divided by its recent
    gradient size. centered: v minus the squared running mean of g; momentum: buf = momentum buf + that step."""
    return torch.optim.RMSprop(groups, lr=lr, alpha=_fraction(alpha, "optimizer.alpha"),
                               eps=_positive(eps, "optimizer.eps"),
                               momentum=_momentum(momentum),
                               centered=_flag(centered, "optimizer.centered"))


@dataclass(frozen=True)
class OptimizerOptions:
    """A checked optimizer config: the builder, where weight decay applies, and the builder's own keys."""

    builder: Callable[..., torch.optim.Optimizer]
    weight_decay: float
    decay_norm_and_bias: bool
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class TrainingOptions:
    """What the loop does between backward and step: clip the global gradient norm (None: no clipping) and
    step once every accumulate_steps batches."""

    grad_clip_norm: float | None
    accumulate_steps: int


def training_options(cfg: dict[str, Any]) -> TrainingOptions:
    clip = cfg.get("grad_clip_norm")
    return TrainingOptions(None if clip is None else _positive(clip, "optimizer.grad_clip_norm"),
                           as_int(cfg.get("accumulate_steps", 1), "optimizer.accumulate_steps", minimum=1))


def _decay_norm_and_bias(cfg: dict[str, Any]) -> bool:
    return _flag(cfg.get("decay_norm_and_bias", False), "optimizer.decay_norm_and_bias")


def _penalty_strengths(cfg: dict[str, Any]) -> tuple[float, float]:
    return _non_negative(cfg.get("l1", 0.0), "optimizer.l1"), _non_negative(cfg.get("l2", 0.0), "optimizer.l2")


def scaled_lr(cfg: dict[str, Any], batch_size: int | None, world_size: int = 1) -> float:
    """The lr to train with: optimizer.lr, or, when optimizer.base_lr is set, base_lr x images per step / 256;
    times world_size with optimizer.scale_lr_with_world_size=true (data-parallel processes, each batch_size).

    The linear scaling rule (Goyal et al. 2017, as timm applies it) keeps the step per image the same, so one
    base_lr serves every batch size; a given lr is then ignored. An optimizer step sees batch_size x
    accumulate_steps images in each of the world_size processes.
    """
    factor = world_size if _flag(cfg.get("scale_lr_with_world_size", False),
                                 "optimizer.scale_lr_with_world_size") else 1
    if cfg.get("base_lr") is None:
        return _positive(cfg.get("lr"), "optimizer.lr") * factor
    base_lr = _positive(cfg["base_lr"], "optimizer.base_lr")
    if batch_size is None:
        raise ValueError("optimizer.base_lr scales with the batch size: pass batch_size to build_optimizer")
    images = as_int(batch_size, "batch_size", minimum=1) * training_options(cfg).accumulate_steps
    return base_lr * images / REFERENCE_BATCH_SIZE * factor


def optimizer_options(cfg: dict[str, Any]) -> OptimizerOptions:
    """Check a whole optimizer config, the training loop's keys included, so that a typo fails before data loads."""
    builder = OPTIMIZERS.get(cfg["name"])
    lr = scaled_lr(cfg, REFERENCE_BATCH_SIZE)  # checks lr, or the base_lr that replaces it
    training_options(cfg)
    _penalty_strengths(cfg)
    kwargs = {key: value for key, value in cfg.items() if key not in ("name", *SHARED_KEYS)}
    builder([{"params": [torch.zeros(1, requires_grad=True)]}], lr=lr, **kwargs)  # checks its own keys (betas, ...)
    return OptimizerOptions(builder, _weight_decay(cfg.get("weight_decay", 0.0)), _decay_norm_and_bias(cfg), kwargs)


def build_optimizer(model: nn.Module, cfg: dict[str, Any], batch_size: int | None = None,
                    lr_mult: Callable[[str], float] | None = None, world_size: int = 1) -> torch.optim.Optimizer:
    """The optimizer over model's trainable parameters; batch_size (images per forward pass) matters with base_lr,
    world_size with scale_lr_with_world_size; lr_mult: a factor on the lr per parameter name
    (finetune.encoder_lr_mult)."""
    options = optimizer_options(cfg)
    lr = scaled_lr(cfg, batch_size, world_size)
    groups = param_groups(model, options.weight_decay, options.decay_norm_and_bias, lr, lr_mult)
    return options.builder(groups, lr=lr, **options.kwargs)


def penalty(model: nn.Module, cfg: dict[str, Any]) -> Callable[[], torch.Tensor] | None:
    """The explicit penalty l1 sum|w| + l2 sum w^2 over the weights that get weight decay, to add to the loss;
    None when there is nothing to add.

    Unlike weight decay, applied by the optimizer (apart from the moments in AdamW), the penalty is part of the
    loss: its gradient l1 sign(w) + 2 l2 w goes through momentum and Adam's scaling like the data's gradient.
    """
    l1, l2 = _penalty_strengths(cfg)
    weights, _ = _split(model, _decay_norm_and_bias(cfg))
    if (l1 == 0 and l2 == 0) or not weights:
        return None
    return lambda: torch.stack([l1 * w.abs().sum() + l2 * w.square().sum() for w in weights]).sum()
