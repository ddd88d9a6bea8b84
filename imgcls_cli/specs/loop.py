"""Specs of what the training loop does around its steps: early_stopping.*, ema.*, bn_recalibrate*, distributed.*."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imgcls_cli.errors import UserError, as_float, as_int

STOPPING_METRICS = ("val_accuracy", "val_loss", "val_map")  # val_map: task=multilabel
BN_CHOICES = ("auto", True, False)
# bn_recalibrate=auto recalibrates while the run has taken fewer optimizer steps than this: with batch norm's
# default momentum 0.1 the running statistics then still hold more than 0.9^100 (3e-5) of their initial values,
# and describe the weights of the last ~10 steps, a large share of a short run.
BN_AUTO_STEPS = 100
BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class EarlyStoppingSpec:
    """early_stopping.metric (val_accuracy | val_loss) in its mode (max | min) chooses best.pt; with patience > 0
    training stops after that many validations in a row without improvement."""

    metric: str = "val_accuracy"
    mode: str = "max"
    patience: int = 0

    @classmethod
    def parse(cls, cfg: dict[str, Any] | None) -> EarlyStoppingSpec:
        cfg = cfg or {}
        metric = cfg.get("metric", "val_accuracy")
        if metric not in STOPPING_METRICS:
            raise UserError(f"early_stopping.metric must be one of {', '.join(STOPPING_METRICS)}, not '{metric}'.")
        mode = cfg.get("mode") or ("min" if metric == "val_loss" else "max")
        if mode not in ("max", "min"):
            raise UserError(f"early_stopping.mode must be max or min, not '{mode}'.")
        return cls(metric, mode, as_int(cfg.get("patience", 0) or 0, "early_stopping.patience", minimum=0))


@dataclass(frozen=True)
class EmaSpec:
    """ema.decay: None (no EMA) or in (0, 1), e.g. 0.999; ema.warmup: decay min(decay, (1 + n) / (10 + n))."""

    decay: float | None = None
    warmup: bool = True

    @classmethod
    def parse(cls, cfg: dict[str, Any] | None) -> EmaSpec:
        cfg = cfg or {}
        if cfg.get("decay") is None:
            return cls(None, bool(cfg.get("warmup", True)))
        decay = as_float(cfg["decay"], "ema.decay")
        if not 0.0 < decay < 1.0:
            raise UserError(f"ema.decay must be in (0, 1) (e.g. 0.999), or null for no EMA; not {decay}.")
        return cls(decay, bool(cfg.get("warmup", True)))


@dataclass(frozen=True)
class BNRecalibrateSpec:
    """bn_recalibrate (auto | True | False): when batch-norm statistics are recomputed; images: over how many
    training images."""

    when: Any = "auto"
    images: int = 1024

    def active(self, steps: int) -> bool:
        """Whether the statistics are recomputed after a run has taken `steps` optimizer steps."""
        return self.when is True or (self.when == "auto" and steps < BN_AUTO_STEPS)

    @classmethod
    def parse(cls, cfg: dict[str, Any]) -> BNRecalibrateSpec:
        """From the train config's bn_recalibrate and bn_recalibrate_images keys."""
        when = cfg.get("bn_recalibrate", "auto")
        if when not in BN_CHOICES or isinstance(when, int) and not isinstance(when, bool):
            raise UserError(f"bn_recalibrate must be auto, true or false, not '{when}'.")
        return cls(when, as_int(cfg.get("bn_recalibrate_images", 1024), "bn_recalibrate_images", minimum=1))


@dataclass(frozen=True)
class DistributedSpec:
    """distributed.*: the processes the command line asks for, the collectives' backend, synchronized batch norm."""

    nproc: int = 1
    backend: str = "auto"
    sync_bn: bool = False

    @classmethod
    def parse(cls, cfg: dict[str, Any] | None) -> DistributedSpec:
        cfg = cfg or {}
        backend = str(cfg.get("backend", "auto"))
        if backend not in BACKENDS:
            raise UserError(f"distributed.backend must be one of {', '.join(BACKENDS)}, not '{backend}'.")
        sync_bn = cfg.get("sync_bn", False)
        if not isinstance(sync_bn, bool):
            raise UserError(f"distributed.sync_bn must be true or false, not '{sync_bn}'.")
        return cls(as_int(cfg.get("nproc", 1), "distributed.nproc", minimum=1), backend, sync_bn)
