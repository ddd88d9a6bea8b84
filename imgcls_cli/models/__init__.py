"""Model registry: every builder takes num_classes, in_channels and image_size, plus its own knobs."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import nn

from imgcls_cli.errors import UserError, as_float, as_int, shown
from imgcls_cli.registry import Registry

MODELS: Registry = Registry("model")
# The most parameters a model may have (about 4 GiB of fp32 weights; torchvision's largest classifier has 0.64e9):
# settings that ask for more (a width of 10^6, 10^9 classes) are refused before any memory is taken.
MAX_PARAMETERS = 2**30
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


# Settings up to these give at most a few hundred million parameters in any family (ResNet-152 at width 128), so
# the size check skips its meta build for them: the first one in a process costs about a second and a half (torch
# loads its meta kernels for the initializers), a price only unusual settings pay.
USUAL_SIZES = {"num_classes": 1000, "width": 128, "widths": 1024, "hidden": 4096, "growth_rate": 64,
               "width_mult": 2.0, "depth_mult": 2.0, "phi": 4.0, "base_image_size": 600}


def _usual(kwargs: dict[str, Any]) -> bool:
    for key, limit in USUAL_SIZES.items():
        values = kwargs.get(key)
        for value in values if isinstance(values, Sequence) and not isinstance(values, str) else [values]:
            if isinstance(value, (int, float)) and value > limit:
                return False
    return True


def _check_size(name: str, builder: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    """Build on the meta device (no memory, no arithmetic, the random generators untouched) and count the
    parameters, so that settings asking for a model too large to hold fail in one line instead of allocating."""
    if _usual(kwargs):
        return
    try:
        with torch.device("meta"):
            model = builder(**kwargs)
    except UserError:
        raise
    except Exception:  # the real build reports what the builder cannot take
        return
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise UserError(f"model '{name}' with these settings has {count:.3g} parameters, more than the "
                        f"{MAX_PARAMETERS:.3g} a model may have: lower model.width(s), model.hidden or the depth.")


def create_model(name: str, for_checkpoint: bool = False, **kwargs: Any) -> nn.Module:
    """Build the registered model `name`; a keyword the builder does not take is a user error.

    for_checkpoint: only the architecture, to receive a checkpoint's state dict, so pretrained weights are never
    fetched. A builder that would fetch some states it with an attribute: `builder.for_checkpoint = fn`.
    """
    builder = MODELS.get(name)
    if for_checkpoint:
        builder = getattr(builder, "for_checkpoint", builder)
    check_kwargs(kwargs)
    try:
        # the meta-device build never fetches pretrained weights: a builder that would has a for_checkpoint twin
        _check_size(name, getattr(builder, "for_checkpoint", builder), kwargs)
        return builder(**kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise UserError(f"model '{name}': {exc}".replace(builder.__name__ + "() ", "")) from None
        raise


def list_models() -> list[str]:
    return MODELS.names()


def input_size(name: str, kwargs: dict[str, Any]) -> int | None:
    """The input size a model asks for (e.g. EfficientNet's scaled resolution), or None to take the dataset's.

    A builder states it with an attribute: `builder.input_size = lambda **model_kwargs: 224`.
    """
    fn = getattr(MODELS.get(name), "input_size", None)
    return fn(**kwargs) if fn is not None else None


def normalization(name: str, kwargs: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """The (mean, std) a model's pretrained weights expect, or None to use the dataset's statistics.

    A builder states it with an attribute: `builder.normalization = lambda **model_kwargs: (mean, std) or None`.
    """
    fn = getattr(MODELS.get(name), "normalization", None)
    return fn(**kwargs) if fn is not None else None


# Importing the family modules registers their builders.
from imgcls_cli.models import (  # noqa: E402,F401
    alexnet, densenet, efficientnet, lenet, resnet, resnet9, simple_cnn, torchvision_models, vgg,
)
