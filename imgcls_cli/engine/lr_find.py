"""The learning-rate range test (Smith 2017, "Cyclical learning rates", section 3.3): train the configured model
for N steps with the lr growing exponentially from min_lr to max_lr, record the loss of every step, stop once it
diverges, and suggest the lr where the smoothed loss falls fastest. The model and optimizer are thrown away."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls_cli.cores import resolve_workers
from imgcls_cli.data.augment import build_augment
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.data.loader import make_loader
from imgcls_cli.engine.build import auto_batch_size, build_loss, build_model, model_normalization
from imgcls_cli.engine.device import auto_precision_for_model, autocast, resolve_device, resolve_precision
from imgcls_cli.engine.device import use_channels_last
from imgcls_cli.engine.fit import StepOptions, forward_batch, optimizer_step
from imgcls_cli.engine.state import seed_everything
from imgcls_cli.errors import UserError, as_float, as_int
from imgcls_cli.optim import build_optimizer
from imgcls_cli.rundir import write_csv, write_json
from imgcls_cli.specs.train import TrainSpec
from imgcls_cli.tasks import task_of

log = logging.getLogger("imgcls")
COLUMNS = ["step", "lr", "loss", "smoothed_loss"]
MIX_STREAM = 500_009  # the MixUp/CutMix generator's seed offset, as in training


@dataclass(frozen=True)
class RangeSpec:
    """lr_find.* checked: the range, the number of steps, the smoothing and the divergence factor."""

    min_lr: float = 1e-7
    max_lr: float = 10.0
    steps: int = 100
    smoothing: float = 0.98
    diverge: float = 4.0

    @classmethod
    def parse(cls, cfg: dict[str, Any]) -> RangeSpec:
        spec = cls(min_lr=as_float(cfg.get("min_lr", cls.min_lr), "lr_find.min_lr"),
                   max_lr=as_float(cfg.get("max_lr", cls.max_lr), "lr_find.max_lr"),
                   steps=as_int(cfg.get("steps", cls.steps), "lr_find.steps", minimum=5, maximum=100_000),
                   smoothing=as_float(cfg.get("smoothing", cls.smoothing), "lr_find.smoothing"),
                   diverge=as_float(cfg.get("diverge", cls.diverge), "lr_find.diverge"))
        if not 0 < spec.min_lr < spec.max_lr or not math.isfinite(spec.max_lr):
            raise UserError(f"lr_find needs 0 < min_lr < max_lr, not min_lr={spec.min_lr}, max_lr={spec.max_lr}.")
        if not 0 <= spec.smoothing < 1:
            raise UserError(f"lr_find.smoothing must be in [0, 1), not {spec.smoothing}.")
        if not spec.diverge > 1:
            raise UserError(f"lr_find.diverge must be > 1, not {spec.diverge}.")
        return spec

    def lr(self, step: int) -> float:
        """min_lr (max_lr / min_lr)^(step / (steps - 1)): the same factor every step."""
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / (self.steps - 1))


@dataclass
class RangeResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: int | None  # index of the suggested lr, None when the loss never fell
    diverged: bool

    @property
    def suggested_lr(self) -> float | None:
        return None if self.suggestion is None else self.lrs[self.suggestion]


def steepest(lrs: list[float], smoothed: list[float]) -> int | None:
    """The index where the smoothed loss falls fastest per decade of lr (its most negative slope against log lr),
    up to the lowest loss; None when it never falls."""
    if len(smoothed) < 3:
        return None
    stop = int(np.argmin(smoothed)) + 1
    if stop < 3:
        return None
    slopes = np.gradient(np.asarray(smoothed[:stop]), np.log10(np.asarray(lrs[:stop])))
    index = int(np.argmin(slopes))
    return index if slopes[index] < 0 else None


def range_test(spec: TrainSpec, options: RangeSpec) -> RangeResult:
    """Run the range test with the spec's model, optimizer, data, augmentation and precision."""
    device = resolve_device(spec.device)
    seed_everything(spec.seed)
    bundle = load_dataset(spec.config["dataset"], spec.seed, task=spec.task.name)
    model_normalization(spec.model, spec.config["dataset"], bundle, None)
    channels_last = use_channels_last(spec.channels_last, device)
    model, _, _ = build_model(spec.model, bundle)
    model = model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    precision = auto_precision_for_model(resolve_precision(spec.precision, device), spec.precision, device, model)
    train = bundle.splits["train"]
    batch_size = spec.batch_size or auto_batch_size(len(train.labels))
    augment = build_augment(spec.augment)
    loader = make_loader(train.images, train.labels, batch_size, bundle.mean, bundle.std, shuffle=True,
                         drop_last=len(train.labels) >= batch_size, augment=augment, seed=spec.seed,
                         device=device, num_workers=resolve_workers(spec.num_workers),
                         channels_last=channels_last)
    optimizer = build_optimizer(model, spec.optimizer, batch_size)
    top = max(g["lr"] for g in optimizer.param_groups)
    ratios = [g["lr"] / top for g in optimizer.param_groups]  # per-group multipliers (finetune.encoder_lr_mult)
    mixer = augment.mixer(bundle.num_classes)
    generator = torch.Generator(device="cpu").manual_seed(spec.seed + MIX_STREAM)
    mix = (lambda x, y: mixer(x, y, generator)) if mixer is not None else None
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    log.info(f"lr_find: {options.steps} steps from {options.min_lr:g} to {options.max_lr:g}, batch {batch_size}, "
             f"{spec.optimizer.name}, {len(train.labels)} training images; device {device}, precision {precision}")
    return _steps(model, loader, optimizer, ratios, build_loss(None, spec.label_smoothing, spec.task),
                  lambda: autocast(device, precision), mix, scaler, spec.optimizer.grad_clip_norm, options,
                  task_of(spec.task.name))


def _batches(loader: Any) -> Any:
    epoch = 0
    while True:
        epoch += 1
        loader.set_epoch(epoch)
        yield from loader


def _steps(model: torch.nn.Module, loader: Any, optimizer: torch.optim.Optimizer, ratios: list[float],
           loss_fn: torch.nn.Module, amp: Any, mix: Any, scaler: Any, clip: float | None,
           options: RangeSpec, task: Any = None) -> RangeResult:
    """The steps of the test; stops when the smoothed loss exceeds diverge x its lowest, or is not finite."""
    model.train()
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best, diverged = 0.0, math.inf, False  # avg: the loss's moving average, debiased by 1 - beta^(step + 1)
    beta = options.smoothing
    batches = _batches(loader)
    step_options = StepOptions() if task is None else StepOptions(task=task)
    for step in range(options.steps):
        lr = options.lr(step)
        for group, ratio in zip(optimizer.param_groups, ratios):
            group["lr"] = lr * ratio
        x, y = next(batches)
        _, _, _, total, _ = forward_batch(model, x, y, loss_fn, amp, mix, step_options)
        loss = float(total.detach())
        if not math.isfinite(loss):
            diverged = True
            break
        (scaler.scale(total) if scaler is not None else total).backward()
        optimizer_step(model, optimizer, scaler, clip)
        avg = beta * avg + (1 - beta) * loss
        value = avg / (1 - beta ** (step + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        best = min(best, value)
        if step > 0 and value > options.diverge * best:
            diverged = True
            break
    return RangeResult(lrs, losses, smoothed, steepest(lrs, smoothed), diverged)


def write_results(result: RangeResult, options: RangeSpec, run_dir: Path) -> None:
    """lr_find.csv (one row a step), lr_find.json (the suggestion) and lr_find.png (the losses against the lr on a log axis, the suggestion)."""
    from imgcls_cli.plots import plot_lr_find

    rows = [{"step": i, "lr": lr, "loss": loss, "smoothed_loss": s}
            for i, (lr, loss, s) in enumerate(zip(result.lrs, result.losses, result.smoothed))]
    write_csv(run_dir / "lr_find.csv", rows, COLUMNS)
    write_json(run_dir / "lr_find.json", summary(result, options))
    plot_lr_find(result.lrs, result.losses, result.smoothed, result.suggestion, run_dir / "lr_find.png")


def summary(result: RangeResult, options: RangeSpec) -> dict[str, Any]:
    """What the test found, written as lr_find.json and returned by the command."""
    return {"suggested_lr": result.suggested_lr, "method": "steepest descent of the smoothed loss",
            "diverged": result.diverged, "steps": len(result.lrs), "last_lr": result.lrs[-1] if result.lrs else None,
            "min_lr": options.min_lr, "max_lr": options.max_lr}
