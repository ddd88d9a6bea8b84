"""The training path: train_one_epoch and predict_logits, plain functions over a model and a loader."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

BatchCallback = Callable[[int, float, float], None]  # (images in batch, running loss, running accuracy)


@dataclass
class Running:
    """An epoch's running sums; saved mid-epoch, so that a resumed epoch reports what an uninterrupted one would."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    amp: contextlib.AbstractContextManager | Callable[[], contextlib.AbstractContextManager],
    scaler: torch.amp.GradScaler | None = None,
    on_batch: BatchCallback | None = None,
    sync_every: int = 10,
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    running: Running | None = None,
    after_step: Callable[[Callable[[], Running]], None] | None = None,
) -> EpochResult:
    """One pass over the loader; loss and accuracy are accumulated on the device and read every sync_every steps.

    mix: batch-level MixUp/CutMix, (x, labels) -> (mixed x, soft targets); accuracy then counts the dominant class.
    running: the sums of the part of this epoch done before a resume. after_step(sums) runs after every
    optimizer step (checkpoints, signals); `sums()` reads the running sums (a device sync, so only when needed).
    """
    model.train()
    device = next(model.parameters()).device
    running = running or Running()
    loss_sum = torch.full((), running.loss_sum, device=device, dtype=torch.float64)
    correct = torch.full((), running.correct, device=device, dtype=torch.int64)
    seen = shown = running.seen
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        target = y
        if mix is not None:
            x, target = mix(x, y)
            y = target.argmax(1)
        with amp() if callable(amp) else amp:
            logits = model(x)
            loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        n = len(y)
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(1) == y).sum()
        seen += n
        if after_step is not None:
            after_step(lambda: Running(loss_sum.item(), int(correct.item()), seen))
        if on_batch is not None and (step + 1) % sync_every == 0:
            on_batch(seen - shown, loss_sum.item() / seen, correct.item() / seen)
            shown = seen
    if on_batch is not None and seen > shown:
        on_batch(seen - shown, loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1))
    seconds = time.perf_counter() - start
    return EpochResult(loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1), seen - running.seen, seconds)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    amp: Callable[[], contextlib.AbstractContextManager],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits and targets of every batch, on the CPU, in loader order."""
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        with amp():
            out = model(x)
        logits.append(out.float())
        targets.append(y)
    if not logits:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    return torch.cat(logits).cpu(), torch.cat(targets).cpu()
