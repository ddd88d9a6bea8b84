"""Tasks: what a model's outputs mean, chosen by `task=`.

multiclass: one label an image; softmax probabilities, cross-entropy, accuracy = the top class is the label.
multilabel: zero or more labels an image, a multi-hot (N, K) target; a sigmoid per label, binary cross-entropy (or
the asymmetric loss), accuracy = subset accuracy (every label decided right at 0.5, scikit-learn's accuracy_score
on multi-hot data), and the mean average precision over the labels, which chooses best.pt.

The engine asks the task instead of branching on it: the activation of its logits, the labels an epoch's accuracy
counts, the validation loss and scores.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imgcls_cli.registry import Registry

TASKS: Registry = Registry("task")
DEFAULT = "multiclass"


class Multiclass:
    name = "multiclass"
    activation = "softmax"  # what predictor.forward turns logits into
    scores_columns: tuple[str, ...] = ()  # scores() keys, metrics.csv columns val_<key>

    @staticmethod
    def counted(target: torch.Tensor) -> torch.Tensor:
        """The labels an epoch's accuracy counts, from a batch's (possibly MixUp-mixed) soft targets."""
        return target.argmax(1)

    @staticmethod
    def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(1) == y).sum()

    @staticmethod
    def loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
        """The summed loss over the images (float64), for the validation loss."""
        return F.cross_entropy(logits.double(), targets, reduction="sum").item()

    @staticmethod
    def scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Validation scores besides loss and accuracy (metrics.csv columns with a val_ prefix)."""
        return {}


class Multilabel:
    name = "multilabel"
    activation = "sigmoid"
    scores_columns = ("map",)

    @staticmethod
    def counted(target: torch.Tensor) -> torch.Tensor:
        return target  # soft multi-hot targets; correct() reads them at 0.5

    @staticmethod
    def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images whose every label is decided right at probability 0.5 (logit 0)."""
        return ((logits > 0) == (y > 0.5)).all(1).sum()

    @staticmethod
    def loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
        """Binary cross-entropy summed over the images, averaged over the labels (float64)."""
        if logits.numel() == 0:
            return 0.0
        total = F.binary_cross_entropy_with_logits(logits.double(), targets.double(), reduction="sum")
        return total.item() / logits.shape[1]

    @staticmethod
    def scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """val_map: the macro mean average precision over the labels with a positive image."""
        return {"map": mean_average_precision(torch.sigmoid(logits).numpy(), targets.numpy())}


TASKS.register("multiclass")(Multiclass)
TASKS.register("multilabel")(Multilabel)


def task_of(name: str | None) -> Any:
    """The task a name (a config's `task`, a checkpoint's `task`) stands for; None: multiclass."""
    return TASKS.get(name or DEFAULT)()


def mean_average_precision(probs: np.ndarray, targets: np.ndarray) -> float:
    """scikit-learn's average precision of each label that has a positive image, averaged (0.0 with none)."""
    from sklearn.metrics import average_precision_score

    targets = np.asarray(targets) > 0.5
    present = targets.any(0)
    if len(targets) == 0 or not present.any():
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(average_precision_score(targets[:, present], np.asarray(probs)[:, present], average="macro"))
