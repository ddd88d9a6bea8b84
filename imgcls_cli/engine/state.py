"""TrainState: what a training run carries from one optimizer step to the next, and the one place that writes and
reads the training part of a checkpoint (last.pt, best.pt, best_ema.pt, resume).

A stateful feature (EMA, domain adaptation, ...) registers itself under the checkpoint key it is saved at:
`state.register("ema", ema)`. Whatever it registers needs state_dict() / load_state_dict(), as every torch
component has; it may also take the optional hooks the loop calls on every registered part (see `Part`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn

from imgcls_cli.checkpoint import save_checkpoint
from imgcls_cli.engine import distributed, precise_bn
from imgcls_cli.errors import UserError
from imgcls_cli.specs.loop import EarlyStoppingSpec


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Part(Stateful, Protocol):
    """A registered feature. Optional hooks, called on every part that has them:
    after_step(model) after each optimizer step; eval_modules() -> modules whose batch-norm statistics are
    recomputed with the model's; after_validation(state, row, evaluate) -> text for the epoch's log line, where
    evaluate(module) gives (val_loss, val_accuracy); without_validation(state) after each epoch of a run with no
    validation split; `columns`, the metrics.csv columns it adds."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and plain containers (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back every global RNG state saved by rng_state()."""
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.getstate() is nested tuples; a checkpoint may give them back as lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class EarlyStopping:
    """early_stopping.metric (val_accuracy | val_loss) in its mode (max | min) chooses best.pt; with patience > 0
    training stops after that many validations in a row without improvement."""

    def __init__(self, metric: str, mode: str, patience: int) -> None:
        self.metric, self.mode, self.patience, self.bad_epochs = metric, mode, patience, 0

    @classmethod
    def from_spec(cls, spec: EarlyStoppingSpec, has_val: bool) -> EarlyStopping:
        if spec.patience and not has_val:
            raise UserError("early_stopping.patience needs a validation split (dataset.val_fraction > 0).")
        # Without a validation split best.pt follows the training accuracy, which is better when higher.
        return cls(spec.metric, spec.mode if has_val else "max", spec.patience)

    def score(self, row: dict[str, Any]) -> float | None:
        return row.get(self.metric)

    def better(self, score: float, best: float) -> bool:
        return score > best if self.mode == "max" else score < best

    def count(self, improved: bool) -> None:
        self.bad_epochs = 0 if improved else self.bad_epochs + 1

    def stop(self) -> bool:
        return bool(self.patience) and self.bad_epochs >= self.patience


@dataclass
class TrainState:
    """The model, its optimizer, schedule and loss scaler, the registered features, where the run is (epochs done,
    optimizer steps, a mid-epoch data position after a resume) and its best so far. `header` is what every
    checkpoint of the run says about its model (name and kwargs, classes, input, config)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    stopper: EarlyStopping
    header: dict[str, Any]
    checkpoints: Path  # the run's checkpoints folder
    ctx: distributed.Dist
    main: bool = True  # rank 0 alone writes checkpoints
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    position: dict[str, Any] | None = None  # where a resumed epoch goes on (consumed by the loop)
    best_score: float = -1.0
    best_epoch: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv so far; last.pt keeps the last one
    parts: dict[str, Part | None] = field(default_factory=dict)
    best_of: dict[str, float] = field(default_factory=dict)  # registered parts' own best scores
    train_images: int = 0  # images trained on and seconds spent in training steps, over the whole run (resumes too)
    train_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.bn_names = set(precise_bn.state_names(self.model))

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's state_dict on the CPU, for a checkpoint. The batch-norm statistics are copied: on the CPU
        .cpu() is the live tensor, and recomputed statistics are replaced by the training-time ones after
        validation."""
        return {k: v.detach().cpu().clone() if k in self.bn_names else v.detach().cpu()
                for k, v in self.model.state_dict().items()}

    def bn_stats(self) -> dict[str, torch.Tensor]:
        """The batch-norm statistics training goes on from (last.pt keeps them beside recomputed ones)."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items() if k in self.bn_names}

    def register(self, name: str, part: Part | None, best: float | None = None) -> None:
        """A feature's state under checkpoint key `name` (None: the feature is off, saved as None); `best`, the
        start of a best-so-far score of its own, kept in the checkpoint's "best" entry under `name`."""
        if name in self.parts:
            raise ValueError(f"An entry is already registered under the name '{name}'.")
        self.parts[name] = part
        if best is not None:
            self.best_of[name] = best

    def active(self, hook: str) -> Iterator[Any]:
        """The registered parts that are on and have `hook`, in registration order."""
        return (p for p in self.parts.values() if p is not None and hasattr(p, hook))

    def columns(self) -> list[str]:
        return [c for p in self.active("columns") for c in p.columns]

    def after_step(self) -> None:
        self.step += 1
        for part in self.active("after_step"):
            part.after_step(self.model)

    def trained(self, images: int, seconds: float) -> None:
        """An epoch's training: its images and the seconds its steps took (every rank's images)."""
        self.train_images += images
        self.train_seconds += seconds

    def images_per_second(self) -> float | None:
        """The run's training rate: every image trained on over the seconds spent training them."""
        return self.train_images / self.train_seconds if self.train_seconds > 0 else None

    def eval_modules(self) -> list[nn.Module]:
        return [m for p in self.active("eval_modules") for m in p.eval_modules()]

    def state_dict(self, weights: dict[str, torch.Tensor], position: dict[str, Any] | None,
                   ranks: list[Any] | None = None, bn_train_stats: dict[str, torch.Tensor] | None = None
                   ) -> dict[str, Any]:
        """The whole of last.pt but the header: the weights, where the run is, and every registered state."""
        return {"state_dict": weights, "epoch": self.epoch, "step": self.step,
                "distributed": {"world_size": self.ctx.world_size}, "ranks": ranks,
                "metrics": {k: v for k, v in self.rows[-1].items() if k != "epoch"} if self.rows else {},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None, "rng": rng_state(),
                "best": {"score": self.best_score, "epoch": self.best_epoch, "bad_epochs": self.stopper.bad_epochs,
                         **self.best_of},
                **{name: part.state_dict() if part is not None else None for name, part in self.parts.items()},
                "position": position, "throughput": {"images": self.train_images, "seconds": self.train_seconds},
                # the batch-norm statistics training continues from, where state_dict holds recomputed ones
                "bn_train_stats": bn_train_stats}

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Continue from last.pt: weights, optimizer, schedule, scaler, best so far, every registered state, this
        rank's data position and RNG states (restored last: nothing may draw a random number after them)."""
        self.model.load_state_dict(ckpt["state_dict"])
        if ckpt.get("bn_train_stats"):  # training goes on from the statistics it had, not the recomputed ones
            self.model.load_state_dict(ckpt["bn_train_stats"], strict=False)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        best = ckpt["best"]
        self.best_score, self.best_epoch = best["score"], best["epoch"]
        self.stopper.bad_epochs = best.get("bad_epochs", 0)
        self.best_of = {name: best.get(name, start) for name, start in self.best_of.items()}
        for name, part in self.parts.items():
            if part is not None and ckpt.get(name):
                part.load_state_dict(ckpt[name])
        mine = ckpt["ranks"][self.ctx.rank] if ckpt.get("ranks") else ckpt  # each rank's own data position
        self.step, self.epoch, self.position = ckpt["step"], ckpt["epoch"], mine.get("position")
        counted = ckpt.get("throughput") or {}  # absent from a last.pt of an older version: counted from here
        images, seconds = counted.get("images"), counted.get("seconds")
        if isinstance(images, int) and isinstance(seconds, float) and images >= 0 and 0 <= seconds < float("inf"):
            self.train_images, self.train_seconds = images, seconds
        restore_rng(mine["rng"])

    def save(self, name: str, payload: dict[str, Any]) -> None:
        """checkpoints/<name>: the header and payload (rank 0 only)."""
        if self.main:
            save_checkpoint({**self.header, **payload}, self.checkpoints / name)

    def save_last(self, weights: Callable[[], dict[str, torch.Tensor]], position: dict[str, Any] | None = None,
                  bn_train_stats: dict[str, torch.Tensor] | None = None) -> None:
        """last.pt; every rank must call it (each one's RNG states and data position are gathered)."""
        ranks = self.ctx.gather({"rng": rng_state(), "position": position}) if self.ctx.enabled else None
        if self.main:
            self.save("last.pt", self.state_dict(weights(), position, ranks, bn_train_stats))

    def save_model(self, name: str, weights: dict[str, torch.Tensor], metrics: dict[str, Any]) -> None:
        """A model checkpoint of the epoch just completed (best.pt, best_ema.pt): no training state."""
        self.save(name, {"state_dict": weights, "epoch": self.epoch, "step": self.step, "metrics": metrics})
