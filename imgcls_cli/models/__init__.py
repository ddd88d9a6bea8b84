"""Model registry: every builder takes num_classes, in_channels and image_size, plus its own knobs."""
from __future__ import annotations

from typing import Any

from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.registry import Registry

MODELS: Registry = Registry("model")


def create_model(name: str, for_checkpoint: bool = False, **kwargs: Any) -> nn.Module:
    """Build the registered model `name`; a keyword the builder does not take is a user error.

    for_checkpoint: only the architecture, to receive a checkpoint's state dict, so pretrained weights are never
    fetched. A builder that would fetch some states it with an attribute: `builder.for_checkpoint = fn`.
    """
    builder = MODELS.get(name)
    if for_checkpoint:
        builder = getattr(builder, "for_checkpoint", builder)
    try:
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
