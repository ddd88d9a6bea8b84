"""TaskSpec: `task=` (multiclass | multilabel), the `loss` group and `threshold`, checked together, since which
loss and threshold make sense depends on the task."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imgcls_cli.errors import UserError, as_float, shown
from imgcls_cli.tasks import TASKS

LOSSES = {"multiclass": ("auto", "ce"), "multilabel": ("auto", "bce", "asl")}
AUTO_LOSS = {"multiclass": "ce", "multilabel": "bce"}


@dataclass(frozen=True)
class TaskSpec:
    """name: multiclass | multilabel. loss: ce | bce | asl (auto resolved). threshold: None (multilabel: each label's
    threshold tuned on the validation split), one probability for every label, or one per label."""

    name: str = "multiclass"
    loss: str = "ce"
    gamma_pos: float = 0.0
    gamma_neg: float = 4.0
    clip: float = 0.05
    threshold: float | tuple[float, ...] | None = None

    @property
    def multilabel(self) -> bool:
        return self.name == "multilabel"

    @classmethod
    def parse(cls, cfg: dict[str, Any]) -> TaskSpec:
        name = cfg.get("task") or "multiclass"
        if name not in TASKS:
            raise UserError(TASKS.unknown_message(name))
        loss_cfg = cfg.get("loss") or {}
        if not isinstance(loss_cfg, dict):
            raise UserError(f"loss must be one of {', '.join(LOSSES[name])} (a config group: loss=asl), not "
                            f"{shown(loss_cfg)}.")
        loss = loss_cfg.get("name", "auto")
        if loss not in LOSSES[name]:
            other = "multilabel" if name == "multiclass" else "multiclass"
            hint = f" ({loss} is a task={other} loss)" if loss in LOSSES[other] else ""
            raise UserError(f"loss={loss} does not apply to task={name}{hint}; choices: {', '.join(LOSSES[name])}.")
        gamma_pos = _at_least_zero(loss_cfg.get("gamma_pos", 0.0), "loss.gamma_pos")
        gamma_neg = _at_least_zero(loss_cfg.get("gamma_neg", 4.0), "loss.gamma_neg")
        clip = as_float(loss_cfg.get("clip", 0.05), "loss.clip")
        if not 0.0 <= clip < 1.0:
            raise UserError(f"loss.clip must be in [0, 1), not {clip}.")
        threshold = parse_threshold(cfg.get("threshold"), "threshold")
        if threshold is not None and name != "multilabel":
            raise UserError("threshold applies to task=multilabel (the probability above which a label is "
                            "predicted); a multiclass model predicts its top class.")
        return cls(name, AUTO_LOSS[name] if loss == "auto" else loss, gamma_pos, gamma_neg, clip, threshold)


def parse_threshold(value: Any, key: str) -> float | tuple[float, ...] | None:
    """null, a probability in (0, 1), or a list of them (one per label; their count is checked against the labels
    once they are known)."""
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    numbers = [as_float(v, key) for v in values]
    if not numbers or any(not 0.0 < v < 1.0 for v in numbers):
        raise UserError(f"{key} must be a probability in (0, 1) or a list of them (one per label), not "
                        f"{shown(value)}.")
    return tuple(numbers) if isinstance(value, (list, tuple)) else numbers[0]


def _at_least_zero(value: Any, key: str) -> float:
    number = as_float(value, key)
    if not 0.0 <= number <= 100.0:
        raise UserError(f"{key} must be a number in [0, 100], not {number}.")
    return number
