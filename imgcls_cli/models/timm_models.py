"""timm: any timm classification model by name, from random init or timm's pretrained weights.

    imgcls train model=timm model.arch=convnext_atto model.pretrained=true

timm builds the model for the dataset itself (`in_chans`, `num_classes`, and `img_size` for the architectures that
take one); pretrained weights come through timm's own loading (the Hugging Face hub cache) and bring their input
size and normalization. timm is an optional package: `pip install 'imgcls[timm]'`.
"""
from __future__ import annotations

import difflib
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from imgcls_cli.errors import UserError, shown
from imgcls_cli.models._api import MODELS
from imgcls_cli.models.torchvision_models import DRY_RUN_BELOW, check_runs_at, one_line

INSTALL = "pip install 'imgcls[timm]'"
PROBE_SECONDS = 5.0  # how long the weights' host may take to answer before the weights count as unreachable


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserError(f"model=timm needs the timm package: {INSTALL}.") from None
    return timm


@lru_cache(maxsize=1)
def arches() -> list[str]:
    """The names model.arch accepts: timm.list_models() (a name may carry a pretrained tag: resnet18.a1_in1k)."""
    return list(_timm().list_models())


def check_arch(arch: str) -> None:
    """An unknown architecture is one line with timm's closest names."""
    base = str(arch).split(".", 1)[0]
    if base in arches():
        return
    close = difflib.get_close_matches(base, arches(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"model.arch={shown(str(arch))} is not a timm model.{hint} "
                    "`imgcls list models` counts them; timm.list_models('PATTERN*') lists them.")


def pretrained_cfg(arch: str) -> Any:
    """timm's pretrained config of the architecture (with its tag, or the default one), or a one-line error."""
    check_arch(arch)
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(arch)
    except (RuntimeError, ValueError, KeyError):  # an unknown tag
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"model.arch={arch} has no pretrained weights in timm: use model.pretrained=false.")
    return cfg


def _cached(cfg: Any) -> bool:
    """Whether timm's weights of this config are in the local cache (Hugging Face hub or torch.hub)."""
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        repo = cfg.hf_hub_id.split("@", 1)[0].replace("/", "--")
        return (Path(constants.HF_HUB_CACHE) / f"models--{repo}" / "snapshots").is_dir()
    return (Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name).is_file()


def _reachable(cfg: Any) -> str | None:
    """None when the weights' host answers, else why not (a name that does not resolve fails at once offline,
    where timm's own download would retry for about a minute)."""
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        url = constants.ENDPOINT
    else:
        url = cfg.url
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        return f"{parsed.hostname} unreachable: {one_line(exc)}"
    return None


def _create(arch: str, pretrained: bool, num_classes: int, in_channels: int, image_size: int,
            kwargs: dict[str, Any]) -> nn.Module:
    """timm.create_model with the dataset's classes and channels, and its image size where the architecture takes
    one (vision transformers); model.* settings timm does not take are one line."""
    timm = _timm()
    args = {"pretrained": pretrained, "num_classes": num_classes, "in_chans": in_channels, **kwargs}
    try:
        try:
            return timm.create_model(arch, img_size=image_size, **args)
        except TypeError as exc:
            if "'img_size'" not in str(exc) or "img_size" in kwargs:
                raise
            return timm.create_model(arch, **args)
    except TypeError as exc:
        key = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if key is None:
            raise
        raise UserError(f"model.arch={arch} takes no model.{key.group(1)} (timm: {one_line(exc)}).") from None
    except (ValueError, AssertionError) as exc:  # timm refuses a setting (a fixed input size, a bad width)
        raise UserError(f"model.arch={arch}: {one_line(exc)}") from None


def _with_weights(arch: str, num_classes: int, in_channels: int, image_size: int,
                  kwargs: dict[str, Any]) -> nn.Module:
    cfg = pretrained_cfg(arch)
    fallback = "or use model.pretrained=false to start from random weights."
    if not _cached(cfg):
        why = _reachable(cfg)
        if why is not None:
            raise UserError(f"model.pretrained=true: the weights of {arch} could not be fetched ({why}) and are not "
                            f"in timm's cache; connect once to download them, {fallback}")
    try:
        return _create(arch, True, num_classes, in_channels, image_size, kwargs)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the hub's, torch.hub's and safetensors' errors alike: one line
        raise UserError(f"model.pretrained=true: the weights of {arch} could not be fetched or read "
                        f"({type(exc).__name__}: {one_line(exc)}); {fallback}") from None


def _build(*, num_classes: int, in_channels: int, image_size: int, arch: str, pretrained: bool, fetch: bool,
           **kwargs: Any) -> nn.Module:
    check_arch(arch)
    kwargs = {k: v for k, v in kwargs.items() if k != "image_size"}
    if pretrained and fetch:
        model = _with_weights(arch, num_classes, in_channels, image_size, kwargs)
    else:
        model = _create(arch, False, num_classes, in_channels, image_size, kwargs)
    if image_size < DRY_RUN_BELOW:
        check_runs_at(model, arch, in_channels, image_size)
    return model


@MODELS.register("timm")
def timm_model(*, num_classes: int, in_channels: int = 3, image_size: int = 32, arch: str = "resnet10t",
               pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _build(num_classes=num_classes, in_channels=in_channels, image_size=image_size, arch=arch,
                  pretrained=bool(pretrained), fetch=True, **kwargs)


def _for_checkpoint(*, num_classes: int, in_channels: int = 3, image_size: int = 32, arch: str = "resnet10t",
                    pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The same architecture timm_model(...) builds, without fetching weights: a checkpoint's state dict fills it."""
    return _build(num_classes=num_classes, in_channels=in_channels, image_size=image_size, arch=arch,
                  pretrained=bool(pretrained), fetch=False, **kwargs)


def _input_size(*, arch: str = "resnet10t", pretrained: bool = False, image_size: int | None = None,
                **_: Any) -> int | None:
    """model.image_size when set, else the size the pretrained weights were trained at, else None (the dataset's).
    Asked before the data loads: an unknown arch is refused here, first."""
    check_arch(arch)
    if image_size is not None:
        return int(image_size)
    return int(pretrained_cfg(arch).input_size[-1]) if pretrained else None


def _normalization(*, arch: str = "resnet10t", pretrained: bool = False,
                   **_: Any) -> tuple[list[float], list[float]] | None:
    """The pretrained weights' mean and std; None without weights (the dataset's statistics)."""
    if not pretrained:
        return None
    cfg = pretrained_cfg(arch)
    return list(cfg.mean), list(cfg.std)


def cam_layer(*, arch: str = "resnet10t", num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
              pretrained: bool = False, **kwargs: Any) -> str:
    """timm's last feature stage (`feature_info`), checked on the meta device to give a (batch, channels, height,
    width) map; transformers' token sequences and channels-last stages are refused in one line."""
    with torch.device("meta"):
        model = _create(arch, False, num_classes, in_channels, image_size,
                        {k: v for k, v in kwargs.items() if k != "image_size"}).eval()
        info = list(getattr(model, "feature_info", None) or [])
        path = info[-1].get("module") if info else None
        shapes: list[torch.Size] = []
        if path:
            hook = model.get_submodule(path).register_forward_hook(lambda m, i, o: shapes.append(o.shape))
            try:
                model(torch.zeros(1, in_channels, image_size, image_size))
            except Exception:  # noqa: BLE001 - a model the meta device cannot run: the real run decides
                shapes.append(torch.Size([1, info[-1].get("num_chs", 0), 1, 1]))
            hook.remove()
    if not path or not shapes or len(shapes[0]) != 4 or shapes[0][1] != info[-1].get("num_chs"):
        raise UserError(f"model.arch={arch}: this timm model has no (channels, height, width) feature map for "
                        "Grad-CAM (a transformer's tokens or a channels-last stage); method=occlusion explains any "
                        "model.")
    return str(path)


def arch_note() -> str:
    """What `imgcls list models` says of the timm row: how many architectures, or how to install timm."""
    try:
        count = len(arches())
    except UserError:
        return f"timm models: model.arch=NAME; needs {INSTALL}"
    return f"any of {count} timm models: model.arch=NAME (timm.list_models()), model.pretrained=true"


timm_model.input_size = _input_size
timm_model.normalization = _normalization
timm_model.for_checkpoint = _for_checkpoint
timm_model.cam_layer = cam_layer
timm_model.arch_note = arch_note
