"""Transfer learning: start from a checkpoint (init=PATH), freeze or slow down the encoder, L2-SP.

f(x) = Classifier(Encoder(x)) with the split of models/heads.py. init=PATH loads every tensor of an imgcls
checkpoint that fits the new model; the classifier head is re-created when the classes differ. The pretrained
weights θ_pre are those the run starts from: init=PATH's, or torchvision's with model=tv model.weights=...
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.models.heads import encoder_parameters, head_name, is_head
from imgcls_cli.specs.transfer import FinetuneSpec

log = logging.getLogger("imgcls")
@dataclass
class InitReport:
    """What init=PATH did to each tensor of the new model's state dict."""

    checkpoint: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # first conv summed/spread over other input channels
    new: list[str] = field(default_factory=list)  # the re-created head

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "loaded": len(self.loaded), "adapted": self.adapted, "new": self.new}


def _adapt_channels(tensor: torch.Tensor, channels: int) -> torch.Tensor:
    """A first conv's filters for another number of input channels: the sum over the old channels spread evenly
    over the new ones, so a gray image gives what its RGB copy gave (and the reverse)."""
    return tensor.sum(dim=1, keepdim=True).repeat(1, channels, 1, 1) / channels


def load_init(model: nn.Module, model_name: str, ckpt: dict[str, Any], path: str, classes: list[str],
              channels: int) -> InitReport:
    """Load init=PATH's matching tensors into model; a different architecture is a one-line UserError."""
    saved_name = ckpt["model"].get("name")
    if saved_name != model_name:
        raise UserError(f"init={path} is a {saved_name} checkpoint and this run trains model={model_name}; "
                        f"use model={saved_name} (with its settings) to start from it.")
    head = head_name(model, len(classes))
    same_classes = list(ckpt["classes"]) == list(classes)
    saved_channels = int(ckpt["input"]["channels"])
    report = InitReport(path)
    state = model.state_dict()
    source = ckpt["state_dict"]
    missing = [k for k in state if k not in source and not is_head(k, head)]
    extra = [k for k in source if k not in state and not is_head(k, head)]
    if missing or extra:
        what = f"this model's {missing[0]} is not in it" if missing else f"its {extra[0]} is not in this model"
        raise UserError(f"init={path} is another {model_name} architecture ({len(missing)} tensor(s) missing, "
                        f"{len(extra)} unexpected: {what}); use the model settings it was trained with: "
                        f"{_kwargs_text(ckpt)}.")
    new_state = {}
    for key, value in state.items():
        if is_head(key, head) and (not same_classes or key not in source):
            report.new.append(key)
            continue
        saved = source[key]
        if saved.shape == value.shape:
            new_state[key] = saved
            report.loaded.append(key)
        elif (saved.ndim == 4 and saved.shape[1] == saved_channels and value.shape[1] == channels
              and saved.shape[0] == value.shape[0] and saved.shape[2:] == value.shape[2:]):
            new_state[key] = _adapt_channels(saved, channels)
            report.adapted.append(key)
        else:
            raise UserError(f"init={path} is another {model_name} architecture: {key} is {tuple(saved.shape)} "
                            f"there and {tuple(value.shape)} here; use the model settings it was trained with: "
                            f"{_kwargs_text(ckpt)}.")
    model.load_state_dict(new_state, strict=False)
    return report


def _kwargs_text(ckpt: dict[str, Any]) -> str:
    kwargs = {k: v for k, v in ckpt["model"].get("kwargs", {}).items()
              if k not in ("num_classes", "in_channels", "image_size")}
    return " ".join(f"model.{k}={v}" for k, v in kwargs.items()) or "the defaults"


def log_init(report: InitReport, model: nn.Module, classes: list[str]) -> None:
    sizes = dict(model.state_dict().items())
    count = lambda names: sum(sizes[n].numel() for n in names)  # noqa: E731
    log.info(f"init={report.checkpoint}: loaded {len(report.loaded)} tensors ({count(report.loaded):,} values)")
    if report.adapted:
        log.info(f"init: adapted to {model_input_channels(model)} input channel(s): {', '.join(report.adapted)}")
    if report.new:
        log.info(f"init: new (classifier head re-created for {len(classes)} classes): {', '.join(report.new)} "
                 f"({count(report.new):,} values)")


def model_input_channels(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 0


def lr_multipliers(model: nn.Module, num_classes: int, options: FinetuneSpec) -> Callable[[str], float] | None:
    """finetune.encoder_lr_mult as a function of the parameter name (None: one lr for all)."""
    if options.encoder_lr_mult == 1.0:
        return None
    head = head_name(model, num_classes)
    return lambda name: 1.0 if is_head(name, head) else options.encoder_lr_mult


class EncoderFreezer:
    """finetune.freeze=encoder: the encoder's parameters get no gradient and its batch-norm layers stay in eval
    mode (running statistics fixed) even while the model trains; unfreeze() undoes both."""

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        head = head_name(model, num_classes)
        self.params = [p for _, p in encoder_parameters(model, head)]
        self.norms = [m for n, m in model.named_modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and not is_head(n + ".", head)]
        self.hooks: list[Any] = []

    def freeze(self) -> None:
        for p in self.params:
            p.requires_grad_(False)
        if not self.hooks:
            self.hooks = [m.register_forward_pre_hook(_eval_mode) for m in self.norms]

    def unfreeze(self) -> None:
        for p in self.params:
            p.requires_grad_(True)
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


def _eval_mode(module: nn.Module, _args: Any) -> None:
    module.training = False


def l2sp_penalty(model: nn.Module, num_classes: int, strength: float) -> Callable[[], torch.Tensor]:
    """λ‖θ − θ_pre‖² over the encoder, θ_pre being the encoder's weights now (the pretrained ones); its gradient
    is 2λ(θ − θ_pre), a pull toward the starting point instead of toward 0 (Li et al. 2018, L2-SP)."""
    params = [p for _, p in encoder_parameters(model, head_name(model, num_classes))]
    reference = [p.detach().clone() for p in params]

    def penalty() -> torch.Tensor:
        return strength * torch.stack([(p - r).float().square().sum() for p, r in zip(params, reference)]).sum()

    return penalty
