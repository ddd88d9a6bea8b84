"""Domain-adversarial training (DANN, Ganin & Lempitsky 2015): features that a domain classifier cannot tell apart.

Each step sees a labelled source batch and an equally large batch of target images whose labels are never used.
A small domain classifier on the encoder's embeddings (the classifier head's input) learns to tell the domains
apart; between them sits a gradient-reversal layer, identity forward and −λ times the gradient backward, so the
one backward pass of L_task + L_domain trains the domain classifier to minimise L_domain while the encoder
minimises L_task − λ·L_domain. λ ramps from 0 to domain.lambda as 2 / (1 + e^(−10p)) − 1 over training progress
p in [0, 1], so that the task is learned before the features are pulled together.
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from imgcls_cli.models.heads import embedding, head_name
from imgcls_cli.specs.dataset import DatasetSpec
from imgcls_cli.specs.transfer import DomainSpec

log = logging.getLogger("imgcls")
COLUMNS = ("domain_lambda", "domain_loss", "domain_accuracy", "target_accuracy")


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.strength, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Identity in the forward pass; the gradient is multiplied by −strength on the way back."""
    return _ReverseGradient.apply(x, strength)


def ramp(progress: float) -> float:
    """2 / (1 + e^(−10 p)) − 1: 0 at the start of training, about 0.987 at half-way, → 1 at the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


# The source's keys the target dataset takes: its sample limits and placement (a quick run stays quick).
SOURCE_KEYS = ("max_train_samples", "max_eval_samples", "in_memory", "memory_budget_gb", "split_seed")


def target_dataset(spec: DomainSpec, source: DatasetSpec, channels: int, image_size: int) -> DatasetSpec:
    """The target's dataset (composed by the command) at the source's channels and size, with the source's sample
    limits and placement, and no class weights or sampler (its labels are never trained on)."""
    assert spec.target_dataset is not None, "the command composes domain.target's dataset"
    return replace(spec.target_dataset, channels=channels, image_size=image_size, class_weights=None, sampler=None,
                   **{key: getattr(source, key) for key in SOURCE_KEYS})


def target_dataset_config(spec: DomainSpec, source: dict[str, Any], channels: int, image_size: int) -> DatasetSpec:
    """target_dataset() from the source's plain config: until the caller passes TrainSpec.dataset."""
    return target_dataset(spec, DatasetSpec.from_config(source), channels, image_size)


class DomainAdversary:
    """The domain classifier and the target batches of one training run; plugged into the training step."""

    def __init__(self, model: nn.Module, num_classes: int, target_batches: Iterator[torch.Tensor],
                 options: DomainSpec, total_batches: int, device: torch.device) -> None:
        head = model.get_submodule(head_name(model, num_classes))
        width = head.in_features if isinstance(head, nn.Linear) else head.in_channels
        hidden = options.hidden
        self.classifier = nn.Sequential(  # as the domain discriminators of DANN's reference implementations
            nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 2),
        ).to(device)
        self.options, self.total, self.batches = options, max(1, total_batches), 0
        self.target_batches = target_batches
        self.latest: torch.Tensor | None = None
        head.register_forward_hook(self._keep)
        self._sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, correct (summed on the device)
        self._count = 0

    def _keep(self, _module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        self.latest = args[0]

    @property
    def strength(self) -> float:
        """λ at this point of training."""
        p = min(1.0, self.batches / self.total)
        return self.options.strength * (ramp(p) if self.options.ramp else 1.0)

    def extend(self, x: torch.Tensor) -> torch.Tensor:
        """The source batch followed by as many target images (their labels stay unused)."""
        target = next(self.target_batches)
        if len(target) != len(x):
            target = target[: len(x)]
        return torch.cat([x, target])

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the source images' logits, the domain loss) of a forward pass over extend()'s batch."""
        assert self.latest is not None, "the model's head did not run"
        n = len(logits) // 2
        features = embedding(self.latest)
        self.latest = None
        domains = (torch.arange(len(logits), device=logits.device) >= n).long()  # 0: source, 1: target
        out = self.classifier(reverse_gradient(features, self.strength)).float()
        loss = F.cross_entropy(out, domains)
        with torch.no_grad():
            correct = (out.argmax(1) == domains).sum().double()
            self._sums += torch.stack([loss.detach().double() * len(domains), correct])
        self._count += len(domains)
        self.batches += 1
        return logits[:n], loss

    def epoch_metrics(self) -> dict[str, float]:
        """The epoch's mean domain loss and domain-classifier accuracy (0.5: the domains look alike), and λ now."""
        loss_sum, correct = self._sums.tolist()
        count = max(self._count, 1)
        self._sums.zero_()
        self._count = 0
        return {"domain_lambda": round(self.strength, 6), "domain_loss": loss_sum / count,
                "domain_accuracy": correct / count}

    def state_dict(self) -> dict[str, Any]:
        return {"classifier": self.classifier.state_dict(), "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classifier.load_state_dict(state["classifier"])
        self.batches = int(state["batches"])


def cycle(loader: Any, first_epoch: int) -> Iterator[torch.Tensor]:
    """The loader's images over and over, reshuffled each pass (labels dropped)."""
    epoch = first_epoch
    while True:
        loader.set_epoch(epoch)
        for x, _ in loader:
            yield x
        epoch += 1
