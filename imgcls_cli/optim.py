"""Optimizer registry; weight decay skips biases and norm parameters (1-D tensors), as timm does."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imgcls_cli.errors import UserError, as_float
from imgcls_cli.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict], *, lr: float, momentum: float = 0.9, nesterov: bool = False, **_: Any) -> torch.optim.Optimizer:
    momentum = as_float(momentum, "optimizer.momentum")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=bool(nesterov) and momentum > 0)


@OPTIMIZERS.register("adam")
def adam(groups: list[dict], *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         **_: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=lr, betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict], *, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          **_: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def optimizer_options(cfg: dict[str, Any]) -> tuple[Any, float, dict[str, Any]]:
    """Check an optimizer config: (builder, weight decay, the builder's keyword arguments)."""
    cfg = dict(cfg)
    builder = OPTIMIZERS.get(cfg.pop("name"))
    lr = as_float(cfg.get("lr"), "optimizer.lr")
    wd = as_float(cfg.pop("weight_decay", 0.0), "optimizer.weight_decay")
    if lr <= 0:
        raise UserError(f"optimizer.lr must be positive, not {cfg.get('lr')}.")
    if wd < 0:
        raise UserError(f"optimizer.weight_decay must be >= 0, not {wd}.")
    return builder, wd, {**cfg, "lr": lr}


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    builder, wd, kwargs = optimizer_options(cfg)
    return builder(param_groups(model, wd), **kwargs)
