"""Model registry: every builder takes num_classes, in_channels and image_size, plus its own knobs."""
from __future__ import annotations

from typing import Any

from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.registry import Registry

MODELS: Registry = Registry("model")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model `name`; a keyword the builder does not take is a user error."""
    builder = MODELS.get(name)
    try:
        return builder(**kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise UserError(f"model '{name}': {exc}".replace(builder.__name__ + "() ", "")) from None
        raise


def list_models() -> list[str]:
    return MODELS.names()


# Importing the family modules registers their builders.
from imgcls_cli.models import resnet, simple_cnn  # noqa: E402,F401
