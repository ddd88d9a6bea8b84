"""Exponential moving average of a model's weights (and batch-norm statistics), as timm's ModelEmaV2 keeps it."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from imgcls_cli.errors import UserError, as_float


class EMA:
    """ema = d·ema + (1 − d)·weights after every optimizer step; with warmup, d = min(decay, (1 + n) / (10 + n))
    at update n, so the average is not stuck near the random initial weights early in training."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.detach(), 1.0 - d)
            else:
                ema_v.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])


def build_ema(model: nn.Module, cfg: dict[str, Any] | None) -> EMA | None:
    """ema.decay: null (off) or in (0, 1), e.g. 0.999; ema.warmup: true."""
    cfg = cfg or {}
    if cfg.get("decay") is None:
        return None
    decay = as_float(cfg["decay"], "ema.decay")
    if not 0.0 < decay < 1.0:
        raise UserError(f"ema.decay must be in (0, 1) (e.g. 0.999), or null for no EMA; not {decay}.")
    return EMA(model, decay, bool(cfg.get("warmup", True)))
