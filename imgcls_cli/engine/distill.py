"""Knowledge distillation: a trained teacher's softened outputs as extra targets for the student.

loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y)   (Hinton et al.; T² keeps the gradients' scale)
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from imgcls_cli.data.inputs import InputSpec
from imgcls_cli.engine.predictor import forward
from imgcls_cli.errors import UserError


COLUMNS = ("distill_loss",)  # metrics.csv: the epoch's mean T²·KL term (train_loss stays the loss against the labels)


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), the batch's mean: the distillation term (0 when they agree)."""
    kl = F.kl_div(F.log_softmax(student / temperature, 1), F.log_softmax(teacher / temperature, 1),
                  reduction="batchmean", log_target=True)
    return temperature ** 2 * kl


def sigmoid_soft_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """task=multilabel: T² times each label's Bernoulli KL(sigmoid(t/T) ‖ sigmoid(s/T)), the mean over the labels
    and the batch (0 when they agree)."""
    s, t = student / temperature, teacher / temperature
    p = torch.sigmoid(t)
    kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return temperature ** 2 * kl.mean()


def distillation_terms(student: torch.Tensor, teacher: torch.Tensor, hard_loss: torch.Tensor, temperature: float,
                       alpha: float, task: str = "multiclass") -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss trained on: α·T²·KL + (1 − α)·hard_loss, the distillation term T²·KL alone); task=multilabel
    distils each label's sigmoid (sigmoid_soft_loss)."""
    soft = (sigmoid_soft_loss if task == "multilabel" else soft_loss)(student, teacher, temperature)
    return alpha * soft + (1.0 - alpha) * hard_loss, soft


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, hard_loss: torch.Tensor, temperature: float,
                      alpha: float) -> torch.Tensor:
    """α·T²·KL(teacher ‖ student) on the temperature-softened distributions, plus (1 − α) times the usual loss."""
    return distillation_terms(student, teacher, hard_loss, temperature, alpha)[0]


class Teacher:
    """A checkpoint's model in eval mode that takes the student's normalized batches.

    The teacher may be any architecture trained on the same classes; its own input size and normalization are
    restored from the student's batch (InputSpec.convert), so teacher and student need not share them.
    """

    def __init__(self, model: nn.Module, student_input: dict[str, Any], teacher_input: dict[str, Any],
                 device: torch.device) -> None:
        self.model = model.to(device).eval().requires_grad_(False)
        self.student, self.input = InputSpec.from_dict(student_input), InputSpec.from_dict(teacher_input)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, amp: Callable[[], Any]) -> torch.Tensor:
        return forward(self.model, self.input.convert(x, self.student), amp, logits=True)


def load_teacher(path: str, classes: list[str], student_input: dict[str, Any], device: torch.device,
                 task: str = "multiclass") -> Teacher:
    """The teacher of distill.teacher=PATH; it must know the student's classes, in the same order, and its task."""
    from imgcls_cli.checkpoint import load_checkpoint
    from imgcls_cli.engine.inference import model_from_checkpoint

    ckpt = load_checkpoint(path)
    if (ckpt.get("task") or "multiclass") != task:
        raise UserError(f"distill.teacher={path} is a {ckpt.get('task') or 'multiclass'} checkpoint; a task={task} "
                        f"student needs a {task} teacher.")
    if list(ckpt["classes"]) != list(classes):
        raise UserError(f"distill.teacher={path} was trained on other classes ({len(ckpt['classes'])}: "
                        f"{', '.join(map(str, ckpt['classes'][:5]))}...) than this dataset's; the teacher must "
                        "share the student's classes.")
    if int(ckpt["input"]["channels"]) != int(student_input["channels"]):
        raise UserError(f"distill.teacher={path} takes {ckpt['input']['channels']}-channel images, the student "
                        f"{student_input['channels']}; set dataset.channels to match.")
    return Teacher(model_from_checkpoint(ckpt, device), student_input, ckpt["input"], device)
