"""Exponential moving average of a model's weights (and batch-norm statistics), as timm's ModelEmaV2 keeps it.

A feature on the TrainState seam: attach() registers it under "ema" (its state in last.pt, its best validation
accuracy in last.pt's "best"), and its hooks update it after every optimizer step, recompute its batch-norm
statistics with the model's, validate it and keep best_ema.pt (without a validation split: the latest average)."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from imgcls_cli.specs.loop import EmaSpec

if TYPE_CHECKING:
    from imgcls_cli.engine.state import TrainState

NAME = "ema"  # its key in a checkpoint and in the checkpoint's "best"

class EMA:
    """ema = d·ema + (1 − d)·weights after every optimizer step; with warmup, d = min(decay, (1 + n) / (10 + n))
    at update n, so the average is not stuck near the random initial weights early in training."""

    columns = ("ema_val_loss", "ema_val_accuracy")  # metrics.csv

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy_without_hooks(model).eval().requires_grad_(False)
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

    def after_step(self, model: nn.Module) -> None:
        self.update(model)

    def eval_modules(self) -> list[nn.Module]:
        return [self.module]

    def after_validation(self, state: TrainState, row: dict[str, Any],
                         evaluate: Callable[[nn.Module], tuple[float, float]]) -> str:
        """The averaged weights validated as the model is; best_ema.pt keeps them at their best val accuracy."""
        row["ema_val_loss"], accuracy = evaluate(self.module)
        row["ema_val_accuracy"] = accuracy
        if accuracy > state.best_of[NAME]:
            state.best_of[NAME] = accuracy
            state.save_model("best_ema.pt", self.state_dict()["state_dict"],
                             {"val_accuracy": accuracy, "val_loss": row["ema_val_loss"]})
        return f"  ema_val_acc {accuracy:.4f}"

    def without_validation(self, state: TrainState) -> None:
        """No validation split (dataset.val_fraction=0): best_ema.pt holds the average as the epoch ends it, as
        best.pt follows the training accuracy; the last epoch's is the one the run keeps."""
        state.save_model("best_ema.pt", self.state_dict()["state_dict"], {})


HOOKS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
         "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


def copy_without_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of the model's modules and tensors without the hooks other features put on the live model (the
    domain adversary's feature hook holds its target batches, which cannot be copied and must not see the EMA's
    forward passes)."""
    saved = [(m, name, getattr(m, name)) for m in model.modules() for name in HOOKS if getattr(m, name, None)]
    for m, name, hooks in saved:
        setattr(m, name, type(hooks)())
    try:
        return copy.deepcopy(model)
    finally:
        for m, name, hooks in saved:
            setattr(m, name, hooks)


def build_ema(model: nn.Module, spec: EmaSpec) -> EMA | None:
    """The EMA of the model that ema.decay asks for (None: ema.decay is null)."""
    return None if spec.decay is None else EMA(model, spec.decay, spec.warmup)


def attach(state: TrainState, spec: EmaSpec) -> None:
    """Register the EMA of state.model that ema.decay asks for (None, saved as such, when it is off)."""
    state.register(NAME, build_ema(state.model, spec), best=-1.0)
