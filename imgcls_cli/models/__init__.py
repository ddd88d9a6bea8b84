"""The models: every family registers its builders into MODELS (models/_api.py); importing this package
imports them all, so `from imgcls_cli.models import create_model` can build any registered name."""
from __future__ import annotations

from imgcls_cli.models import (  # noqa: F401  (importing the family modules registers their builders)
    alexnet, densenet, efficientnet, lenet, resnet, resnet9, simple_cnn, timm_models, torchvision_models, vgg,
)
from imgcls_cli.models._api import (
    MAX_PARAMETERS, MODELS, cam_layer, create_model, input_size, list_models, normalization,
)
from imgcls_cli.specs.model import KWARG_CHECKS, MAX_WIDTH, ModelSpec, check_kwargs

__all__ = ["KWARG_CHECKS", "MAX_PARAMETERS", "MAX_WIDTH", "MODELS", "ModelSpec", "cam_layer", "check_kwargs",
           "create_model", "input_size", "list_models", "normalization"]
