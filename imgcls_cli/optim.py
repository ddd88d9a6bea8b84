"""Optimizer registry, parameter groups and explicit L1/L2 penalties, built from a checked OptimizerSpec.

Weight decay and the penalties skip biases and norm parameters (1-D tensors) by default, as timm does: pulling a
bias or a BatchNorm scale toward 0 does not make the function simpler, it only fights the normalization.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from imgcls_cli.registry import Registry
from imgcls_cli.specs.optimizer import OptimizerSpec

OPTIMIZERS: Registry = Registry("optimizer")


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
def sgd(groups: list[dict], *, lr: float, momentum: float, nesterov: bool) -> torch.optim.Optimizer:
    """buf = momentum buf + g; w -= lr buf (Nesterov: w -= lr (g + momentum buf)); weight decay adds wd w to g."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


@OPTIMIZERS.register("adam")
def adam(groups: list[dict], *, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """w -= lr m^ / (sqrt(v^) + eps) with bias-corrected moments of g; weight decay adds wd w to g."""
    return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], *, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay: w -= lr wd w, apart from the moments, so decay is not rescaled by v."""
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


@OPTIMIZERS.register("rmsprop")
def rmsprop(groups: list[dict], *, lr: float, alpha: float, eps: float, momentum: float,
            centered: bool) -> torch.optim.Optimizer:
    """v = alpha v + (1 - alpha) g^2; w -= lr g / (sqrt(v) + eps): each weight's step is divided by its recent
    gradient size. centered: v minus the squared running mean of g; momentum: buf = momentum buf + that step."""
    return torch.optim.RMSprop(groups, lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered)


def build_optimizer(model: nn.Module, spec: OptimizerSpec, batch_size: int | None = None,
                    lr_mult: Callable[[str], float] | None = None, world_size: int = 1) -> torch.optim.Optimizer:
    """The optimizer over model's trainable parameters; batch_size (images per forward pass) matters with base_lr,
    world_size with scale_lr_with_world_size; lr_mult: a factor on the lr per parameter name
    (finetune.encoder_lr_mult)."""
    lr = spec.lr_for(batch_size, world_size)
    groups = param_groups(model, spec.weight_decay, spec.decay_norm_and_bias, lr, lr_mult)
    return OPTIMIZERS.get(spec.name)(groups, lr=lr, **spec.kwargs)


def penalty(model: nn.Module, spec: OptimizerSpec) -> Callable[[], torch.Tensor] | None:
    """The explicit penalty l1 sum|w| + l2 sum w^2 over the weights that get weight decay, to add to the loss;
    None when there is nothing to add.

    Unlike weight decay, applied by the optimizer (apart from the moments in AdamW), the penalty is part of the
    loss: its gradient l1 sign(w) + 2 l2 w goes through momentum and Adam's scaling like the data's gradient.
    """
    l1, l2 = spec.l1, spec.l2
    weights, _ = _split(model, spec.decay_norm_and_bias)
    if (l1 == 0 and l2 == 0) or not weights:
        return None
    return lambda: torch.stack([l1 * w.abs().sum() + l2 * w.square().sum() for w in weights]).sum()
