"""The model registry and the one way to build a model from it (as torchvision's models/_api.py): every builder
takes num_classes, in_channels and image_size, plus its own knobs. Family modules register into MODELS here;
imgcls_cli.models imports them all."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.registry import Registry
from imgcls_cli.specs.model import ModelSpec, check_kwargs

MODELS: Registry = Registry("model")
# The most parameters a model may have (about 4 GiB of fp32 weights; torchvision's largest classifier has 0.64e9):
# settings that ask for more (a width of 10^6, 10^9 classes) are refused before any memory is taken.
MAX_PARAMETERS = 2**30


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


def create_model(spec: ModelSpec | str, for_checkpoint: bool = False, **kwargs: Any) -> nn.Module:
    """Build the model a ModelSpec names (or the registered `name` with these keyword arguments, checked here); a
    keyword the builder does not take is a user error.

    for_checkpoint: only the architecture, to receive a checkpoint's state dict, so pretrained weights are never
    fetched. A builder that would fetch some states it with an attribute: `builder.for_checkpoint = fn`.
    """
    name = spec.name if isinstance(spec, ModelSpec) else spec
    builder = MODELS.get(name)
    if for_checkpoint:
        builder = getattr(builder, "for_checkpoint", builder)
    if isinstance(spec, ModelSpec):
        if kwargs:
            raise TypeError("create_model(spec) takes its keyword arguments from the spec")
        kwargs = dict(spec.kwargs)
    else:
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


def _named(spec: ModelSpec | str, kwargs: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, ModelSpec):
        return spec.name, dict(spec.kwargs)
    return spec, dict(kwargs or {})


def input_size(spec: ModelSpec | str, kwargs: dict[str, Any] | None = None) -> int | None:
    """The input size a model asks for (e.g. EfficientNet's scaled resolution), or None to take the dataset's.

    A builder states it with an attribute: `builder.input_size = lambda **model_kwargs: 224`.
    """
    name, kwargs = _named(spec, kwargs)
    fn = getattr(MODELS.get(name), "input_size", None)
    return fn(**kwargs) if fn is not None else None


def normalization(spec: ModelSpec | str,
                  kwargs: dict[str, Any] | None = None) -> tuple[list[float], list[float]] | None:
    """The (mean, std) a model's pretrained weights expect, or None to use the dataset's statistics.

    A builder states it with an attribute: `builder.normalization = lambda **model_kwargs: (mean, std) or None`.
    """
    name, kwargs = _named(spec, kwargs)
    fn = getattr(MODELS.get(name), "normalization", None)
    return fn(**kwargs) if fn is not None else None


def cam_layer(spec: ModelSpec | str, kwargs: dict[str, Any] | None = None) -> str | None:
    """The module path of the model's last spatial feature map, the layer Grad-CAM explains; None when the model
    declares none.

    A builder states it with an attribute: `builder.cam_layer = "features"`, or a function of the model kwargs that
    returns the path (torchvision's models: by architecture family).
    """
    name, kwargs = _named(spec, kwargs)
    layer = getattr(MODELS.get(name), "cam_layer", None)
    return layer(**kwargs) if callable(layer) else layer
