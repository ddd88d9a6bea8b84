"""Specs of what a run learns from besides its labels: finetune.* (init=PATH, frozen or slower encoder, L2-SP),
domain.* (a target domain's unlabelled images) and distill.* (a teacher's softened outputs)."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from imgcls_cli.errors import UserError, as_float, as_int
from imgcls_cli.specs.dataset import DatasetSpec

FREEZE_CHOICES = ("none", "encoder")


@dataclass(frozen=True)
class FinetuneSpec:
    freeze: str = "none"  # encoder: only the classifier head trains (encoder weights and BN statistics fixed)
    unfreeze_epoch: int | None = None  # with freeze=encoder: the whole model trains from this epoch on
    encoder_lr_mult: float = 1.0  # the encoder's lr is the head's times this
    l2sp: float = 0.0  # λ of λ‖θ − θ_pre‖² over the encoder, added to the loss

    @property
    def needs_pretrained(self) -> bool:
        return self.freeze == "encoder" or self.l2sp > 0

    def frozen_at(self, epoch: int) -> bool:
        return self.freeze == "encoder" and (self.unfreeze_epoch is None or epoch < self.unfreeze_epoch)

    @classmethod
    def parse(cls, cfg: dict[str, Any] | None) -> FinetuneSpec:
        cfg = cfg or {}
        freeze = cfg.get("freeze") or "none"
        if freeze not in FREEZE_CHOICES:
            raise UserError(f"finetune.freeze must be encoder or none, not '{freeze}'.")
        unfreeze = cfg.get("unfreeze_epoch")
        unfreeze = None if unfreeze is None else as_int(unfreeze, "finetune.unfreeze_epoch", minimum=1)
        if unfreeze is not None and freeze != "encoder":
            raise UserError("finetune.unfreeze_epoch needs finetune.freeze=encoder (there is nothing to unfreeze).")
        mult = as_float(cfg.get("encoder_lr_mult", 1.0), "finetune.encoder_lr_mult")
        l2sp = as_float(cfg.get("l2sp", 0.0), "finetune.l2sp")
        if not (0 <= mult < math.inf):
            raise UserError(f"finetune.encoder_lr_mult must be >= 0, not {mult}.")
        if not (0 <= l2sp < math.inf):
            raise UserError(f"finetune.l2sp must be >= 0, not {l2sp}.")
        return cls(freeze, unfreeze, mult, l2sp)


@dataclass(frozen=True)
class DomainSpec:
    """domain.* checked; TrainSpec holds None when domain.target is not set (no domain adaptation)."""

    target: str  # a dataset option (conf/dataset/<target>.yaml)
    target_root: str | None
    strength: float  # domain.lambda: the reversal's strength at the end of the ramp (or throughout)
    ramp: bool
    hidden: int  # the domain classifier's hidden width
    # The target option's dataset (train.yaml's dataset keys under its own yaml, at target_root): composed by the
    # command; the engine gives it the source's channels, size, sample limits and placement.
    target_dataset: DatasetSpec | None = None

    @classmethod
    def parse(cls, cfg: dict[str, Any] | None, dataset_options: list[str]) -> DomainSpec | None:
        """None when domain.target is not set; dataset_options: the dataset options a target may be."""
        cfg = cfg or {}
        target = cfg.get("target")
        if not target:
            return None
        if target not in dataset_options:
            raise UserError(f"domain.target must be a dataset option ({', '.join(dataset_options)}), not "
                            f"'{target}'.")
        strength = as_float(cfg.get("lambda", 1.0), "domain.lambda")
        if not 0 <= strength < math.inf:
            raise UserError(f"domain.lambda must be >= 0, not {strength}.")
        ramp_setting = cfg.get("ramp", True)
        if not isinstance(ramp_setting, bool):
            raise UserError(f"domain.ramp must be true or false, not {ramp_setting!r}.")
        return cls(str(target), cfg.get("target_root"), strength, ramp_setting,
                   as_int(cfg.get("hidden", 256), "domain.hidden", minimum=1))

    def with_target(self, composed: dict[str, Any]) -> DomainSpec:
        """This spec with its target's dataset: the option's composed config, at domain.target_root."""
        cfg = dict(composed)
        if self.target_root:
            cfg["file" if self.target == "csv" else "root"] = self.target_root
        return replace(self, target_dataset=DatasetSpec.from_config(cfg))


@dataclass(frozen=True)
class DistillSpec:
    """distill.*: the teacher checkpoint (None: no distillation), the temperature T and the weight alpha."""

    teacher: str | None = None
    temperature: float = 4.0
    alpha: float = 0.7

    @classmethod
    def parse(cls, cfg: dict[str, Any] | None) -> DistillSpec:
        cfg = cfg or {}
        teacher = cfg.get("teacher")
        temperature = as_float(cfg.get("temperature", 4.0), "distill.temperature")
        alpha = as_float(cfg.get("alpha", 0.7), "distill.alpha")
        if temperature <= 0:
            raise UserError(f"distill.temperature must be > 0, not {temperature}.")
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"distill.alpha must be in [0, 1], not {alpha}.")
        return cls(str(teacher) if teacher else None, temperature, alpha)
