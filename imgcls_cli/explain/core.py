"""One checkpoint's model set up to be explained, and batches of images explained: the model's probabilities and
one heat map per image for the class asked. `imgcls explain` and `imgcls eval explain=N` both go through here."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls_cli.checkpoint import EXPORTED
from imgcls_cli.data.inputs import InputSpec
from imgcls_cli.errors import UserError
from imgcls_cli.explain.methods import METHODS, needs_layer, require_captum
from imgcls_cli.export.runtime import model_from_checkpoint
from imgcls_cli.models import cam_layer

log = logging.getLogger("imgcls")


@dataclass
class Explained:
    """A batch explained: probabilities (N, K), the class each map explains (N,), the maps (N, H, W) in [0, 1]."""

    probs: np.ndarray
    classes: np.ndarray
    heat: np.ndarray


def refuse_exported(checkpoint: str | Path, key: str = "checkpoint") -> None:
    """A one-line error for an exported file: explanations need the layers and gradients of the .pt's model."""
    suffix = Path(str(checkpoint)).suffix.lower()
    if suffix in EXPORTED:
        raise UserError(f"{key}={checkpoint} is {EXPORTED[suffix]}; explanations need the model's layers and "
                        "gradients: give the .pt checkpoint it was exported from (its metadata's imgcls.source).")


def explanation_layer(model: nn.Module, ckpt: dict[str, Any], method: str) -> tuple[str, nn.Module] | None:
    """The (path, module) of the model's last spatial feature map, where the method reads one; a model that
    declares none is a one-line error."""
    if not needs_layer(method):
        return None
    name, kwargs = ckpt["model"]["name"], dict(ckpt["model"].get("kwargs", {}))
    path = cam_layer(name, kwargs)
    if path is None:
        raise UserError(f"model '{name}' has no spatial feature map to explain with method={method} (its builder "
                        "declares no cam_layer: a model without convolutions); method=occlusion explains any model.")
    return path, model.get_submodule(path)


class Explainer:
    """A checkpoint's model (float32, eval mode, no in-place activations: gradients are taken through them) and the
    method that explains it."""

    def __init__(self, ckpt: dict[str, Any], method: str, device: torch.device) -> None:
        require_captum()
        self.method, self.device = method, device
        self.fn = METHODS.get(method)
        self.name = str(ckpt["model"]["name"])
        self.classes = [str(c) for c in ckpt["classes"]]
        self.multilabel = ckpt.get("task") == "multilabel"  # a sigmoid per label: the most probable label explained
        self.input = InputSpec.from_checkpoint(ckpt)
        self.model = model_from_checkpoint(ckpt, device).float().eval()
        for module in self.model.modules():
            if getattr(module, "inplace", False):
                module.inplace = False
        self.layer = explanation_layer(self.model, ckpt, method)
        self.checked = False

    def __call__(self, images: torch.Tensor, classes: np.ndarray | None = None) -> Explained:
        """uint8 (N, C, H, W) images at the checkpoint's input: each image's map of `classes` (None: of the class
        the model predicts)."""
        x = self.input.normalize(images.to(self.device))
        with torch.no_grad():
            logits = self._forward(x)
            probs = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, 1)
        chosen = probs.argmax(1) if classes is None else torch.as_tensor(classes, dtype=torch.int64,
                                                                           device=self.device)
        with torch.enable_grad(), warnings.catch_warnings():
            # captum's notes on what it does (hooks set and removed, inputs made to require gradients)
            warnings.simplefilter("ignore", UserWarning)
            heat = self.fn(self.model, self.layer[1] if self.layer else None, x, chosen)
        return Explained(probs.cpu().numpy(), chosen.cpu().numpy(), heat)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits; the first time, also a check that the layer gives a spatial map."""
        if self.checked or self.layer is None:
            return self.model(x)
        shapes: list[tuple[int, ...]] = []
        handle = self.layer[1].register_forward_hook(
            lambda _m, _a, out: shapes.append(tuple(out.shape) if isinstance(out, torch.Tensor) else ()))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        self.checked = True
        self._check_spatial(shapes[0] if shapes else ())
        return logits

    def _check_spatial(self, shape: tuple[int, ...]) -> None:
        path = self.layer[0] if self.layer else ""
        if len(shape) != 4:
            raise UserError(f"model '{self.name}': its layer '{path}' gives outputs of shape {list(shape)}, not a "
                            f"spatial map (batch, channels, height, width), so method={self.method} cannot read it; "
                            "method=occlusion explains any model.")
        if shape[2] * shape[3] == 1:
            log.warning(f"model '{self.name}': its layer '{path}' is 1x1 at {self.input.size} px input, so the "
                        f"{self.method} maps are flat; method=occlusion, or a model trained on larger images, "
                        "shows where the evidence is")
