"""The explanation methods, registered by name (method=...): captum's attributions, each turned into one heat map
per image at the input's size, scaled to [0, 1] (1: the image's strongest evidence for the class explained).

A method takes (model, layer, batch, classes): the model in eval mode, its last spatial feature map (None for a
method that does not read a layer: `method.needs_layer = False`), a normalized float32 batch and the class index
to explain for each image. captum is imported where a method runs, so that the rest of imgcls works without it
(and torch is not imported here: the config checks read the registry's names).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from imgcls_cli.errors import UserError
from imgcls_cli.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

INSTALL = "pip install 'imgcls[explain]'"
Method = Callable[..., Any]  # (model, layer, batch, classes) -> (N, H, W) numpy maps
METHODS: Registry[Method] = Registry("explanation method")
OCCLUSION_PIXELS = 2**22  # occlusion: at most this many input values in one forward pass (16 MB of float32)


def require_captum() -> None:
    """A one-line error naming the extra when captum is not installed."""
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        raise UserError(f"explanations need captum, which is not installed: {INSTALL}") from None


def check_method(name: Any) -> str:
    """A registered method's name (method=, explain_method=), or a one-line error with the close matches."""
    METHODS.get(str(name))
    return str(name)


def needs_layer(method: str) -> bool:
    """Whether the method reads the model's last spatial feature map (Grad-CAM does; occlusion does not)."""
    return getattr(METHODS.get(method), "needs_layer", True)


def unit(maps: torch.Tensor) -> np.ndarray:
    """(N, H, W) maps -> float32 numpy, each divided by its maximum (a map with nothing above 0 stays 0)."""
    import torch

    maps = maps.detach().float().clamp(min=0)
    peak = maps.flatten(1).max(1).values.view(-1, 1, 1)
    scaled = maps / peak.clamp(min=float(torch.finfo(torch.float32).tiny))
    return torch.where(peak > 0, scaled, torch.zeros_like(scaled)).clamp(max=1).cpu().numpy()


@METHODS.register("gradcam")
def gradcam(model: nn.Module, layer: nn.Module | None, x: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): the layer's channels weighted by their mean gradient, ReLU, upsampled
    (bilinear) to the input."""
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(model, layer).attribute(x, target=classes, relu_attributions=True)
    return unit(LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0])


@METHODS.register("guided_gradcam")
def guided_gradcam(model: nn.Module, layer: nn.Module | None, x: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """Guided Grad-CAM: guided backpropagation (pixel-sharp) times the Grad-CAM map; the map is its absolute
    value summed over the colour channels."""
    from captum.attr import GuidedGradCam

    attribution = GuidedGradCam(model, layer).attribute(x, target=classes, interpolate_mode="bilinear")
    return unit(attribution.abs().sum(1))


@METHODS.register("occlusion")
def occlusion(model: nn.Module, layer: nn.Module | None, x: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """Occlusion (Zeiler & Fergus 2014): how much the class's logit drops when a square of 1/8 of the image side
    (the dataset's mean colour) covers each of the 8 x 8 places; needs no layer, so it explains any model, at 64
    forward passes an image."""
    from captum.attr import Occlusion

    channels, size = x.shape[1], x.shape[-1]
    window = max(2, size // 8)
    stride = window
    per_pass = max(1, min(64, OCCLUSION_PIXELS // max(1, x.numel())))
    attribution = Occlusion(model).attribute(x, target=classes, sliding_window_shapes=(channels, window, window),
                                             strides=(channels, stride, stride), baselines=0.0,
                                             perturbations_per_eval=per_pass)
    return unit(attribution.sum(1))


gradcam.needs_layer = True
guided_gradcam.needs_layer = True
occlusion.needs_layer = False
