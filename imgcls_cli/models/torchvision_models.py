"""tv: any torchvision classification model by name, from random init or torchvision's pretrained weights.

    imgcls train model=tv model.arch=resnet50 model.weights=DEFAULT

The classifier head is replaced for the dataset's classes, a 1-channel input gets a first conv whose filters
are the sums of the RGB ones, and pretrained weights bring their own input size and normalization.
"""
from __future__ import annotations

import difflib
import logging
import pickle
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from typing import TYPE_CHECKING

import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.models._api import MODELS
from imgcls_cli.models.heads import head_name, is_head

log = logging.getLogger("imgcls")
if TYPE_CHECKING:  # torchvision is imported where it is used: it costs ~1.5 s, and most runs never need it
    from torchvision.models import WeightsEnum

HEAD_ATTRIBUTES = ("fc", "classifier", "head", "heads")  # where torchvision's classifiers keep their head
AUX_ARCHES = ("googlenet", "inception_v3")  # auxiliary heads: in training mode these return a tuple
# The last spatial feature map of each torchvision family (an arch name starts with its family), the layer
# Grad-CAM explains. Families whose maps are not (batch, channels, height, width) (vit, swin, maxvit) are not here.
CAM_LAYERS = {
    "alexnet": "features", "convnext": "features", "densenet": "features", "efficientnet": "features",
    "googlenet": "inception5b", "inception": "Mixed_7c", "mnasnet": "layers", "mobilenet": "features",
    "regnet": "trunk_output", "resnet": "layer4", "resnext": "layer4", "shufflenet": "conv5",
    "squeezenet": "features", "vgg": "features", "wide_resnet": "layer4",
}
# Below this size (px) one zero image goes through the model at build time, cheap there, to catch the arches
# that shrink a small image to nothing (alexnet, inception_v3) or take one fixed size (vit).
DRY_RUN_BELOW = 64


@lru_cache(maxsize=1)
def arches() -> list[str]:
    """The names model.arch accepts: torchvision's classification models."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def resolve_weights(arch: str, weights: str | None) -> WeightsEnum | None:
    """model.weights (null, DEFAULT, IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2...) -> torchvision's entry."""
    if arch not in arches():
        close = difflib.get_close_matches(str(arch), arches(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"model.arch={arch} is not a torchvision classification model.{hint} "
                        "`imgcls list models` lists them.")
    if weights is None:
        return None
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    name = str(weights).removeprefix(f"{enum.__name__}.")
    if name not in enum.__members__:
        choices = ", ".join(["null", *enum.__members__])
        raise UserError(f"model.weights={weights} is not a weights name of {arch}. Choices: {choices}.")
    return enum[name]


def _cache_file(entry: WeightsEnum) -> Path:
    """Where torch.hub keeps the downloaded file: <TORCH_HOME>/hub/checkpoints/<name in the url>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(entry.url).path).name


def one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pretrained(arch: str, entry: WeightsEnum, kwargs: dict[str, Any], asked: str) -> nn.Module:
    """torchvision's model with its weights, downloaded into the torch.hub cache on first use."""
    cached, setting = _cache_file(entry), f"model.weights={asked} of {arch}"
    try:
        import torchvision

        return torchvision.models.get_model(arch, weights=entry, progress=sys.stderr.isatty(), **kwargs)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        if not cached.is_file():
            raise UserError(
                f"{setting}: {cached.name} is not in torchvision's cache {cached.parent} "
                f"and could not be downloaded ({one_line(exc)}); download {entry.url} into {cached.parent}, "
                "or use model.weights=null to start from random weights.") from None
        if "state_dict" in str(exc):  # the file is fine, the architecture was changed by a model.* setting
            raise UserError(f"{setting} does not fit the model built with "
                            f"{', '.join(f'model.{k}' for k in kwargs)}: {one_line(exc)}") from None
        raise UserError(f"{setting}: {cached} could not be read ({one_line(exc)}); "
                        "delete it to download it again, or use model.weights=null.") from None


def _replace_head(model: nn.Module, arch: str, num_classes: int, expected: int) -> None:
    """Swap the head's last Linear (or SqueezeNet's 1x1 conv) for a fresh one with num_classes outputs."""
    head_name = next((a for a in HEAD_ATTRIBUTES if isinstance(getattr(model, a, None), nn.Module)), None)
    head = getattr(model, head_name) if head_name else None
    layers = [(n, m) for n, m in head.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))] if head else []
    if not layers or getattr(layers[-1][1], "out_features", getattr(layers[-1][1], "out_channels", 0)) != expected:
        raise UserError(f"model.arch={arch}: its classifier head has a shape tv does not know how to replace; "
                        "use model.weights=null, or one of the other torchvision models.")
    path, last = layers[-1]
    if isinstance(last, nn.Linear):
        new: nn.Module = nn.Linear(last.in_features, num_classes, bias=last.bias is not None)
    else:
        new = nn.Conv2d(last.in_channels, num_classes, last.kernel_size, last.stride, last.padding,
                        bias=last.bias is not None)
    parent_path, _, attr = f"{head_name}.{path}".rstrip(".").rpartition(".")
    setattr(model.get_submodule(parent_path), attr, new)


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """The first conv takes in_channels; each new filter is the sum of the RGB ones / in_channels.

    For one channel that is the plain sum, so a gray image gives what the RGB image (R = G = B) gave.
    """
    path, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels != 3 or conv.groups != 1:
        raise UserError(f"tv cannot adapt the first layer of this model to {in_channels} input channels.")
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attr, new)


def check_runs_at(model: nn.Module, arch: str, in_channels: int, image_size: int) -> None:
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise UserError(f"model.arch={arch} cannot run on {image_size}x{image_size} images ({one_line(exc)}); "
                        "use dataset.image_size=224.") from None
    finally:
        model.train(training)


def _get_model(arch: str, weights: str | None, entry: WeightsEnum | None, num_classes: int,
               kwargs: dict[str, Any]) -> nn.Module:
    try:
        if entry is None:
            import torchvision

            return torchvision.models.get_model(arch, num_classes=num_classes, **kwargs)
        return _pretrained(arch, entry, kwargs, asked=str(weights))
    except TypeError as exc:
        key = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if key is None:
            raise
        raise UserError(f"model.arch={arch} takes no model.{key.group(1)} (torchvision: {exc}).") from None
    except ValueError as exc:  # torchvision refuses a setting that contradicts the weights
        raise UserError(f"model.arch={arch}: {exc}") from None


def _shape_kwargs(arch: str, entry: WeightsEnum, in_channels: int) -> dict[str, Any]:
    """The settings torchvision's builders take from pretrained weights, which change the model's shape or forward."""
    if arch.startswith("vit_"):
        return {"image_size": entry.meta["min_size"][0]}
    if arch.startswith("maxvit_"):
        return {"input_size": entry.meta["min_size"]}
    if arch in AUX_ARCHES and in_channels == 3:
        return {"transform_input": True}
    return {}


def _build(*, num_classes: int, in_channels: int, image_size: int, arch: str, weights: str | None,
           fetch: bool, **kwargs: Any) -> nn.Module:
    entry = resolve_weights(arch, weights)
    kwargs = dict(kwargs)
    if arch in AUX_ARCHES:
        if kwargs.pop("aux_logits", False):
            raise UserError(f"model.aux_logits=true is not supported: training takes one output of {arch}.")
        if entry is None or not fetch:  # with weights torchvision insists on building them: they are dropped below
            kwargs["aux_logits"] = False
            kwargs.setdefault("init_weights", False)  # PyTorch's init; True is torchvision's slower legacy one
        if in_channels != 3:
            kwargs.setdefault("transform_input", False)  # it re-normalizes the three RGB channels
    if entry is not None and not fetch:  # the pretrained architecture, random weights: a checkpoint fills them
        kwargs = {**_shape_kwargs(arch, entry, in_channels), **kwargs}
        model = _get_model(arch, None, None, len(entry.meta["categories"]), kwargs)
    else:
        model = _get_model(arch, weights, entry, num_classes, kwargs)
    if arch in AUX_ARCHES:
        model.aux_logits = False
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, name):
                setattr(model, name, None)
    if entry is not None:
        _replace_head(model, arch, num_classes, expected=len(entry.meta["categories"]))
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    if image_size < DRY_RUN_BELOW:
        check_runs_at(model, arch, in_channels, image_size)
    return model


@MODELS.register("tv")
def tv(*, num_classes: int, in_channels: int = 3, image_size: int = 32, arch: str = "resnet18",
       weights: str | None = None, **kwargs: Any) -> nn.Module:
    model = _build(num_classes=num_classes, in_channels=in_channels, image_size=image_size, arch=arch,
                   weights=weights, fetch=True, **kwargs)
    if resolve_weights(arch, weights) is not None:
        log_pretrained(model, arch, str(weights), num_classes, in_channels)
    return model


def log_pretrained(model: nn.Module, arch: str, weights: str, num_classes: int, in_channels: int) -> None:
    """What came from the pretrained weights and what is new, as init=PATH reports it."""
    head = head_name(model, num_classes)
    new = [k for k in model.state_dict() if is_head(k, head)]
    first = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    adapted = [f"{first}.weight"] if in_channels != 3 else []
    loaded = len(model.state_dict()) - len(new) - len(adapted)
    log.info(f"model.weights={weights} ({arch}): loaded {loaded} tensors; new (classifier head re-created for "
             f"{num_classes} classes): {', '.join(new)}"
             + (f"; adapted to {in_channels} input channel(s): {', '.join(adapted)}" if adapted else ""))


def _for_checkpoint(*, num_classes: int, in_channels: int = 3, image_size: int = 32, arch: str = "resnet18",
                    weights: str | None = None, **kwargs: Any) -> nn.Module:
    """The same architecture as tv(...) builds, without fetching the weights: a checkpoint's state dict fills it."""
    return _build(num_classes=num_classes, in_channels=in_channels, image_size=image_size, arch=arch,
                  weights=weights, fetch=False, **kwargs)


def _input_size(*, arch: str = "resnet18", weights: str | None = None, image_size: int | None = None,
                **_: Any) -> int | None:
    """model.image_size when set, else the size the weights were trained at, else None (the dataset's)."""
    if image_size is not None:
        return int(image_size)
    entry = resolve_weights(arch, weights)
    return int(entry.transforms().crop_size[0]) if entry is not None else None


def _normalization(*, arch: str = "resnet18", weights: str | None = None,
                   **_: Any) -> tuple[list[float], list[float]] | None:
    """The weights' RGB mean and std (a 1-channel input takes the mean of the three); None without weights."""
    entry = resolve_weights(arch, weights)
    if entry is None:
        return None
    transforms = entry.transforms()
    return list(transforms.mean), list(transforms.std)


def cam_layer(*, arch: str = "resnet18", **_: Any) -> str:
    """The module path of the arch's last spatial feature map (CAM_LAYERS, by the longest family name it starts
    with); a family not in the table is a one-line error."""
    family = max((f for f in CAM_LAYERS if arch.startswith(f)), key=len, default=None)
    if family is None:
        raise UserError(f"model.arch={arch}: imgcls does not know which layer of this torchvision model holds its last "
                        f"spatial feature map (it knows the families {', '.join(sorted(CAM_LAYERS))}); "
                        "method=occlusion explains any model.")
    return CAM_LAYERS[family]


tv.input_size = _input_size
tv.normalization = _normalization
tv.for_checkpoint = _for_checkpoint
tv.cam_layer = cam_layer
tv.arch_note = lambda: (f"any of {len(arches())} torchvision models: model.arch=NAME (listed below), "
                        "model.weights=DEFAULT")
tv.arch_choices = arches
