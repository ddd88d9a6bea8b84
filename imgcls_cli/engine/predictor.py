"""The one batched inference path: a model in eval mode over batches, under the chosen precision, with
test-time augmentation and embeddings. Validation, the test evaluation, `imgcls eval` (and its ensembles),
`imgcls predict`, `features=true` and the distillation teacher all run their forward passes here."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from imgcls_cli.engine.device import autocast, auto_precision_for_model, use_channels_last
from imgcls_cli.errors import UserError
from imgcls_cli.export.runtime import ExportedModel
from imgcls_cli.models.heads import captured_embeddings
from imgcls_cli.specs.eval import TTA_VIEWS

Amp = Callable[[], contextlib.AbstractContextManager]


@dataclass
class Predictions:
    """What a pass over the batches gave, on the CPU and in batch order."""

    outputs: torch.Tensor  # float32 (N, K): softmax probabilities (the mean over the TTA views), or logits
    targets: torch.Tensor  # what the batches carried beside the images (labels), concatenated
    features: np.ndarray | None = None  # float32 (N, D) embeddings of the images themselves, when asked


def views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of a batch that test-time augmentation averages over, the batch itself first: hflip adds its
    mirror; hflip_shift adds those and the batch shifted by 1/16 of its size both ways."""
    if tta not in TTA_VIEWS:
        raise ValueError(f"tta must be one of {', '.join(TTA_VIEWS)}, not '{tta}'")
    out = [x] if tta == "none" else [x, x.flip(-1)]
    if tta == "hflip_shift":
        s = max(1, x.shape[-1] // 16)
        out += [_shifted(x, s), _shifted(x, -s)]
    return out


def _shifted(x: torch.Tensor, s: int) -> torch.Tensor:
    """x moved by s pixels down and right (s < 0: up and left), zero (the mean, after normalization) filled."""
    out = torch.zeros_like(x)
    if s > 0:
        out[..., s:, s:] = x[..., :-s, :-s]
    else:
        out[..., :s, :s] = x[..., -s:, -s:]
    return out


ACTIVATIONS = {"softmax": lambda z: torch.softmax(z, 1), "sigmoid": torch.sigmoid}  # multiclass, multilabel


def forward(model: nn.Module, x: torch.Tensor, amp: Amp, *, tta: str = "none", logits: bool = False,
            activation: str = "softmax") -> torch.Tensor:
    """One batch: float32 logits (logits=True) or probabilities (softmax over the classes, or a sigmoid per label
    for task=multilabel) averaged over the TTA views."""
    to_probs = ACTIVATIONS[activation]
    if logits:
        with amp():
            out = model(x)
        return out.float()
    total = None
    all_views = views(x, tta)
    for view in all_views:
        with amp():
            p = to_probs(model(view).float())
        total = p if total is None else total + p
    return total / len(all_views)


@torch.inference_mode()
def predict(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], amp: Amp, *, tta: str = "none",
            logits: bool = False, head: str | None = None, activation: str = "softmax") -> Predictions:
    """Every batch's outputs (see forward) and targets (None targets are left out), on the CPU, in batch order;
    with `head` (the classifier head's module name), the embeddings (its input) of each batch's images themselves."""
    model.eval()
    outputs, targets = [], []
    with captured_embeddings(model, head) if head is not None else contextlib.nullcontext() as captured:
        for x, y in batches:
            outputs.append(forward(model, x, amp, tta=tta, logits=logits, activation=activation))
            if y is not None:
                targets.append(y)
    found = None
    if captured is not None:  # the first view of each batch is the images themselves
        found = torch.cat([f.float().cpu() for f in captured[::TTA_VIEWS[tta]]]).numpy() if captured else \
            np.zeros((0, 0), np.float32)
    if not outputs:
        return Predictions(torch.empty(0), torch.empty(0, dtype=torch.int64), found)
    return Predictions(torch.cat(outputs).cpu(), torch.cat(targets).cpu() if targets else
                       torch.empty(0, dtype=torch.int64), found)


def prepare(model: nn.Module, train_cfg: dict[str, Any], device: torch.device, precision: str,
            resolved: str) -> tuple[nn.Module, Amp, bool]:
    """A checkpoint's model set up as its training run evaluated it (channels_last and precision=auto chosen
    alike, so that eval and predict give the numbers validation gave): (model, its autocast, channels_last).
    An exported model runs as it was exported: float32, NCHW (precision=auto is fp32 for it)."""
    if isinstance(model, ExportedModel):
        if precision not in ("auto", "fp32"):
            raise UserError(f"precision={precision} does not apply to {model.path}: an exported model runs in the "
                            "float32 it was exported in; use precision=auto or fp32 (or the .pt checkpoint).")
        return model, lambda: autocast(device, "fp32"), False
    prec = auto_precision_for_model(resolved, precision, device, model)
    channels_last = use_channels_last(train_cfg.get("channels_last", "auto"), device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, lambda: autocast(device, prec), channels_last
