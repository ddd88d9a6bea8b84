"""ModelSpec: the model group checked once: its registry name and its builder's keyword arguments, each value
that means the same in every family (widths, counts, rates, flags) in its range. A family checks its own
choices (stem, activation, depth) when it builds."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from imgcls_cli.errors import UserError, as_float, as_int, shown

MAX_WIDTH = 2**16  # channels of one layer, classes, hidden units


def _dropout(key: str, value: Any) -> None:
    number = as_float(value, f"model.{key}")
    if not 0 <= number < 1:  # 1 would zero every activation: the model could learn nothing
        raise UserError(f"model.{key} must be a probability in [0, 1), not {shown(value)}.")


def _count(key: str, value: Any) -> None:
    as_int(value, f"model.{key}", minimum=1, maximum=MAX_WIDTH)


def _optional_count(key: str, value: Any) -> None:
    if value is not None:
        _count(key, value)


def _counts(key: str, value: Any) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise UserError(f"model.{key} must be a list of whole numbers >= 1, not {shown(value)}.")
    for item in value:
        _count(key, item)


def _positive(key: str, value: Any) -> None:
    if not 0 < as_float(value, f"model.{key}") < math.inf:
        raise UserError(f"model.{key} must be a positive number, not {shown(value)}.")


def _optional_positive(key: str, value: Any) -> None:
    if value is not None:
        _positive(key, value)


def _non_negative(key: str, value: Any) -> None:
    if not 0 <= as_float(value, f"model.{key}") < math.inf:
        raise UserError(f"model.{key} must be a number >= 0, not {shown(value)}.")


def _fraction(key: str, value: Any) -> None:
    if not 0 < as_float(value, f"model.{key}") <= 1:
        raise UserError(f"model.{key} must be in (0, 1], not {shown(value)}.")


def _flag(key: str, value: Any) -> None:
    if not isinstance(value, bool):  # the string 'false' would count as true
        raise UserError(f"model.{key} must be true or false, not {shown(value)}.")


# Keyword arguments that mean the same in every family that takes them, checked before any builder runs (also
# for a checkpoint's kwargs); each family checks its own choices (stem, activation, depth ...).
KWARG_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "num_classes": _count, "in_channels": _count, "image_size": _optional_count,
    "drop_rate": _dropout, "drop_path_rate": _dropout,
    "width": _count, "widths": _counts, "hidden": _optional_count, "growth_rate": _count,
    "compression": _fraction, "head_scale": _positive, "phi": _non_negative, "base_image_size": _count,
    "width_mult": _optional_positive, "depth_mult": _optional_positive,
    "batch_norm": _flag, "lrn": _flag, "zero_init_residual": _flag,
}


def check_kwargs(kwargs: dict[str, Any]) -> None:
    """A one-line UserError for the first keyword argument whose value is out of its range."""
    for key, value in kwargs.items():
        check = KWARG_CHECKS.get(key)
        if check is not None:
            check(key, value)


@dataclass(frozen=True)
class ModelSpec:
    """A model config, checked: the registry name and the builder's keyword arguments."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ModelSpec:
        """The `model` group: `name` and the builder's keyword arguments."""
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        check_kwargs(kwargs)
        return cls(str(cfg["name"]), kwargs)

    def with_input(self, num_classes: int, in_channels: int, image_size: int | None) -> ModelSpec:
        """The same model sized for a dataset: its classes, channels and image size join the keyword arguments."""
        kwargs = {**self.kwargs, "num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
        check_kwargs(kwargs)
        return ModelSpec(self.name, kwargs)
