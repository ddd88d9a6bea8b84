"""AugmentSpec: the augment group checked once; every op's probability and range, and the mixing settings.

Each op has a checker here with the op's name, keyword arguments and defaults (so a misspelled keyword reads
"augment.rotation: rotation() got an unexpected keyword argument 'deg'"); it returns the op's checked values,
which imgcls_cli.data.augment builds the op from. The checkers' names are the op registry's names (a test
holds the two lists equal).
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from imgcls_cli.errors import UserError, as_float, as_int
from imgcls_cli.registry import Registry

# Keys of the augment group that are settings of the batch mixing, not ops.
MIX_SETTINGS = ("mix_prob", "switch_prob")
MIX_OPS = ("mixup", "cutmix")
OPS: Registry[Callable[..., dict[str, Any]]] = Registry("augmentation op")


def _probability_at(key: str, p: Any) -> float:
    p = as_float(p, key)
    if not 0.0 <= p <= 1.0:
        raise UserError(f"{key} must be a probability in [0, 1], not {p}.")
    return p


def _probability(name: str, p: Any) -> float:
    return _probability_at(f"augment.{name}.p", p)


def _plain(value: Any) -> Any:
    """A config value as the user wrote it: OmegaConf lists as plain lists."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value


def _pair(name: str, key: str, value: Any, upper: float = math.inf) -> tuple[float, float]:
    """A [low, high] config pair with 0 < low <= high <= upper, or a UserError naming the key."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not 0 < lo <= hi <= upper:
        bound = "" if upper == math.inf else f" <= {upper:g}"
        raise UserError(f"augment.{name}.{key} must be two numbers 0 < low <= high{bound}, not {_plain(value)!r}.")
    return lo, hi


def _factor_range(name: str, r: Any) -> float:
    r = as_float(r, f"augment.{name}.range")
    if not 0 <= r < 1:
        raise UserError(f"augment.{name}.range must be in [0, 1), not {r}.")
    return r


def _bins(name: str, num_magnitude_bins: Any) -> int:
    return as_int(num_magnitude_bins, f"augment.{name}.num_magnitude_bins", minimum=2)


def _alpha(name: str, alpha: Any) -> float:
    a = as_float(alpha, f"augment.{name}.alpha")
    if not 0 <= a < math.inf:
        raise UserError(f"augment.{name}.alpha must be >= 0 (0 turns {name} off), not {a}.")
    return a


@OPS.register()
def hflip(p: Any = 0.5) -> dict[str, Any]:
    return {"p": _probability("hflip", p)}


@OPS.register()
def vflip(p: Any = 0.5) -> dict[str, Any]:
    return {"p": _probability("vflip", p)}


@OPS.register()
def rotation(p: Any = 0.5, degrees: Any = 10.0) -> dict[str, Any]:
    degrees = as_float(degrees, "augment.rotation.degrees")
    return {"p": _probability("rotation", p), "degrees": degrees}


@OPS.register()
def scale(p: Any = 0.5, range: Any = (0.9, 1.1)) -> dict[str, Any]:  # noqa: A002 - config key
    pair = _pair("scale", "range", range)
    return {"p": _probability("scale", p), "range": pair}


@OPS.register()
def translate(p: Any = 0.5, fraction: Any = 0.1) -> dict[str, Any]:
    f = as_float(fraction, "augment.translate.fraction")
    if not 0 <= f < 1:
        raise UserError(f"augment.translate.fraction must be in [0, 1), not {f}.")
    return {"p": _probability("translate", p), "fraction": f}


@OPS.register()
def random_resized_crop(p: Any = 1.0, scale: Any = (0.08, 1.0), ratio: Any = (3 / 4, 4 / 3)) -> dict[str, Any]:
    area = _pair("random_resized_crop", "scale", scale, upper=1.0)
    aspect = _pair("random_resized_crop", "ratio", ratio)
    return {"p": _probability("random_resized_crop", p), "scale": area, "ratio": aspect}


@OPS.register()
def brightness(p: Any = 0.5, range: Any = 0.2) -> dict[str, Any]:  # noqa: A002
    r = _factor_range("brightness", range)
    return {"p": _probability("brightness", p), "range": r}


@OPS.register()
def contrast(p: Any = 0.5, range: Any = 0.2) -> dict[str, Any]:  # noqa: A002
    r = _factor_range("contrast", range)
    return {"p": _probability("contrast", p), "range": r}


@OPS.register()
def saturation(p: Any = 0.5, range: Any = 0.2) -> dict[str, Any]:  # noqa: A002
    r = _factor_range("saturation", range)
    return {"p": _probability("saturation", p), "range": r}


@OPS.register()
def hue(p: Any = 0.5, range: Any = 0.1) -> dict[str, Any]:  # noqa: A002
    r = as_float(range, "augment.hue.range")
    if not 0 <= r <= 0.5:
        raise UserError(f"augment.hue.range must be in [0, 0.5] (a fraction of the colour wheel), not {r}.")
    return {"p": _probability("hue", p), "range": r}


@OPS.register()
def random_erasing(p: Any = 0.5, scale: Any = (0.02, 0.33), ratio: Any = (0.3, 3.3),
                   value: Any = 0.0) -> dict[str, Any]:
    area = _pair("random_erasing", "scale", scale, upper=1.0)
    aspect = _pair("random_erasing", "ratio", ratio)
    fill = 0.0 if value == "noise" else value
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0 <= fill <= 1:
        raise UserError(f"augment.random_erasing.value must be a gray level in [0, 1] or 'noise', not {value!r}.")
    return {"p": _probability("random_erasing", p), "scale": area, "ratio": aspect,
            "value": "noise" if value == "noise" else fill}


@OPS.register()
def randaugment(p: Any = 1.0, num_ops: Any = 2, magnitude: Any = 9, num_magnitude_bins: Any = 31) -> dict[str, Any]:
    bins = _bins("randaugment", num_magnitude_bins)
    level = as_int(magnitude, "augment.randaugment.magnitude", minimum=0)
    if level >= bins:
        raise UserError(f"augment.randaugment.magnitude must be a whole number in [0, {bins - 1}] "
                        f"(below num_magnitude_bins), not {level}.")
    ops = as_int(num_ops, "augment.randaugment.num_ops", minimum=0)
    return {"p": _probability("randaugment", p), "num_ops": ops, "magnitude": level, "num_magnitude_bins": bins}


@OPS.register()
def trivialaugment(p: Any = 1.0, num_magnitude_bins: Any = 31) -> dict[str, Any]:
    bins = _bins("trivialaugment", num_magnitude_bins)
    return {"p": _probability("trivialaugment", p), "num_magnitude_bins": bins}


@OPS.register()
def mixup(alpha: Any = 0.2) -> dict[str, Any]:
    return {"alpha": _alpha("mixup", alpha)}


@OPS.register()
def cutmix(alpha: Any = 1.0) -> dict[str, Any]:
    return {"alpha": _alpha("cutmix", alpha)}


@dataclass(frozen=True)
class OpSpec:
    """One per-image op: its registry name and its checked keyword arguments."""

    name: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class AugmentSpec:
    """The per-image ops in config order, and the batch mixing (MixUp/CutMix, applied by the training loop)."""

    ops: tuple[OpSpec, ...] = ()
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    name: str | None = field(default=None, compare=False)

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @property
    def mix_params(self) -> dict[str, float]:
        """The keyword arguments of data.mix.Mixer (besides num_classes)."""
        return {"mixup_alpha": self.mixup_alpha, "cutmix_alpha": self.cutmix_alpha, "mix_prob": self.mix_prob,
                "switch_prob": self.switch_prob}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AugmentSpec:
        """Every key but `name` is an op or a mixing setting, checked in config order."""
        ops: list[OpSpec] = []
        settings: dict[str, float] = {}
        for key, params in cfg.items():
            if key == "name":
                continue
            if key in MIX_SETTINGS:
                settings[key] = _probability_at(f"augment.{key}", params)
                continue
            checked = _check_op(key, params)
            if key in MIX_OPS:
                settings[f"{key}_alpha"] = checked["alpha"]
            else:
                ops.append(OpSpec(key, checked))
        name = cfg.get("name")
        return cls(tuple(ops), **settings, name=None if name is None else str(name))


def _check_op(name: str, params: Any) -> dict[str, Any]:
    """The checked values of one op key; unknown keys name the closest op or mixing setting."""
    if name not in OPS:
        close = difflib.get_close_matches(str(name), MIX_SETTINGS, n=1, cutoff=0.7)
        if close:
            raise UserError(f"unknown augment key '{name}'. Did you mean {close[0]}?")
    check = OPS.get(name)
    params = {} if params is None else ({"p": params} if isinstance(params, (int, float)) else dict(params))
    try:
        return check(**params)
    except TypeError as exc:
        raise UserError(f"augment.{name}: {exc}") from None
