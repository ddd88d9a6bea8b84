"""The training path: train_one_epoch, a plain function over a model and a loader."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import nn

from imgcls_cli.tasks import Multiclass



class Progress(Protocol):
    """What the loop reports to (console.EpochProgress): due() says when the running loss and accuracy are to be
    read (a device sync), update() takes them with the images done since the last update."""

    def due(self) -> bool: ...

    def update(self, images: int, loss: float, acc: float) -> None: ...


@dataclass
class Running:
    """An epoch's running sums; saved mid-epoch, so that a resumed epoch reports what an uninterrupted one would."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    distill_sum: float = 0.0  # knowledge distillation's T²·KL term, summed over the images


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float
    skipped: int = 0  # batches left out for a non-finite loss (on_nan=skip_batch)
    distill_loss: float | None = None  # the mean distillation term (with a teacher); `loss` is against the labels

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


@dataclass
class StepOptions:
    """How each optimizer step is taken (all off by default)."""

    penalty: Callable[[], torch.Tensor] | None = None  # explicit L1/L2 term added to the loss
    grad_clip_norm: float | None = None  # clip the gradients' global norm to this
    accumulate_steps: int = 1  # batches whose gradients add up into one optimizer step
    on_nan: str = "stop"  # stop | skip_batch: what a non-finite loss does
    # Knowledge distillation: the teacher's logits of a batch; distill(student, teacher, loss) gives the loss
    # trained on and the distillation term (reported apart: the epoch's loss stays the loss against the labels).
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None
    distill: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    # Domain-adversarial training: extend(x) appends target images to the batch; split(logits) gives back the
    # source logits and the domain loss, added to the loss that is backpropagated (not to the reported loss).
    domain: Any = None
    task: Any = field(default_factory=Multiclass)  # tasks.Multiclass | Multilabel: the labels accuracy counts


class NonFiniteLoss(Exception):
    """The loss was NaN or infinite (on_nan=stop); `step` is the optimizer step it happened at."""

    def __init__(self, step: int) -> None:
        super().__init__(f"the loss became NaN or infinite at step {step}")
        self.step = step


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    amp: contextlib.AbstractContextManager | Callable[[], contextlib.AbstractContextManager],
    scaler: torch.amp.GradScaler | None = None,
    progress: Progress | None = None,
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    running: Running | None = None,
    after_step: Callable[[Callable[[], Running]], None] | None = None,
    options: StepOptions | None = None,
    first_step: int = 0,
) -> EpochResult:
    """One pass over the loader; loss and accuracy are accumulated on the device and read only when the progress
    display is due (by wall time, not every step), so that a step adds no device sync.

    mix: batch-level MixUp/CutMix, (x, labels) -> (mixed x, soft targets); accuracy then counts the dominant class.
    running: the sums of the part of this epoch done before a resume. after_step(sums) runs after every
    optimizer step (checkpoints, signals); `sums()` reads the running sums (a device sync, so only when needed).
    A non-finite loss raises NonFiniteLoss naming its step (first_step + steps taken here), found without a
    sync per step; with on_nan=skip_batch such a batch is left out (one sync per step) and counted.
    """
    options = options or StepOptions()
    model.train()
    running = running or Running()
    totals = _Totals(running, next(model.parameters()).device, options.task)
    shown, steps, skipped, pending = running.seen, first_step, 0, 0
    start = time.perf_counter()

    def take_step(done: int) -> int:
        optimizer_step(model, optimizer, scaler, options.grad_clip_norm)
        scheduler.step()
        if after_step is not None:
            after_step(totals.read)
        return done + 1

    optimizer.zero_grad(set_to_none=True)
    for x, y in loader:
        logits, y, loss, total, soft = forward_batch(model, x, y, loss_fn, amp, mix, options)
        finite = torch.isfinite(total.detach())
        if options.on_nan == "skip_batch" and not bool(finite):
            skipped += 1
            continue
        totals.note_finite(finite, steps + 1)
        scaled = total / options.accumulate_steps
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        pending += 1
        totals.add(loss, soft, logits, y)
        if pending == options.accumulate_steps:
            steps, pending = take_step(steps), 0
        if progress is not None and progress.due():
            shown = totals.show(progress, shown)
    if pending:  # the epoch's last, shorter accumulation
        steps = take_step(steps)
    totals.check()
    if progress is not None and totals.seen > shown:
        totals.show(progress, shown, check=False)
    seconds = time.perf_counter() - start
    return totals.result(running.seen, seconds, skipped, options.distill is not None)


def forward_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, amp: Any,
             mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
             options: StepOptions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                            torch.Tensor | None]:
    """One batch's (logits, labels counted for accuracy, loss against the labels, loss to backpropagate,
    distillation term)."""
    target = y
    if mix is not None:
        x, target = mix(x, y)
        y = options.task.counted(target)
    domain_loss = None
    with amp() if callable(amp) else amp:
        if options.domain is not None:
            logits, domain_loss = options.domain.split(model(options.domain.extend(x)))
        else:
            logits = model(x)
        loss = loss_fn(logits.float(), target)
    objective, soft = loss, None
    if options.teacher is not None and options.distill is not None:
        objective, soft = options.distill(logits.float(), options.teacher(x), loss)
    if options.penalty is not None:  # in float32, outside autocast
        extra = options.penalty()
        loss, objective = loss + extra, objective + extra
    total = objective if domain_loss is None else objective + domain_loss
    return logits, y, loss, total, soft


class _Totals:
    """An epoch's running sums, kept on the device: reading them is a device sync, so they are read only when
    needed. first_bad is the first step whose loss was not finite (-1: none so far)."""

    def __init__(self, running: Running, device: torch.device, task: Any) -> None:
        self.task = task
        self.loss_sum = torch.full((), running.loss_sum, device=device, dtype=torch.float64)
        self.distill_sum = torch.full((), running.distill_sum, device=device, dtype=torch.float64)
        self.correct = torch.full((), running.correct, device=device, dtype=torch.int64)
        self.first_bad = torch.full((), -1, device=device, dtype=torch.int64)
        self.seen = running.seen

    def note_finite(self, finite: torch.Tensor, step: int) -> None:
        self.first_bad = torch.where(~finite & (self.first_bad < 0), step, self.first_bad)

    def add(self, loss: torch.Tensor, soft: torch.Tensor | None, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = len(y)
        self.loss_sum += loss.detach().double() * n
        if soft is not None:
            self.distill_sum += soft.detach().double() * n
        self.correct += self.task.correct(logits.detach(), y)
        self.seen += n

    def check(self) -> None:
        """Raise NonFiniteLoss when a loss so far was NaN or infinite (a device sync)."""
        _checked(None, self.first_bad)

    def read(self) -> Running:
        return _checked(Running(self.loss_sum.item(), int(self.correct.item()), self.seen, self.distill_sum.item()),
                        self.first_bad)

    def show(self, progress: Progress, shown: int, check: bool = True) -> int:
        """Report the images since `shown` with the running means; returns the images shown now."""
        if check:
            self.check()
        seen = max(self.seen, 1)
        progress.update(self.seen - shown, self.loss_sum.item() / seen, self.correct.item() / seen)
        return self.seen

    def result(self, seen_before: int, seconds: float, skipped: int, distilled: bool) -> EpochResult:
        seen = max(self.seen, 1)
        distill = self.distill_sum.item() / seen if distilled else None
        return EpochResult(self.loss_sum.item() / seen, self.correct.item() / seen, self.seen - seen_before,
                           seconds, skipped, distill)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                    clip: float | None) -> None:
    if scaler is not None:
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _checked(value: Running | None, first_bad: torch.Tensor) -> Running | None:
    """value, after making sure no loss so far was NaN or infinite (a device sync)."""
    bad = int(first_bad.item())
    if bad >= 0:
        raise NonFiniteLoss(bad)
    return value
