"""Batch-norm statistics recomputed with the current weights ("precise BN").

During training a batch-norm layer keeps running statistics as an exponential average (momentum 0.1) of the batch
statistics it saw, each from the weights of its own step. After a few steps they still hold much of their
initial values (mean 0, variance 1) and describe weights that have since changed, so validation and test in eval
mode score near chance while the training accuracy is high. Recalibration sets each layer's running mean and
variance to the statistics of its input over a fixed sample of training images (no augmentation), computed with
the weights as they are now (Wu & Johnson 2021, "Rethinking batch in BatchNorm"; fvcore's PreciseBN).

The pass draws no random number (dropout and the like stay in eval mode, the sample is fixed), so a resumed run
recalibrates exactly as an uninterrupted one. Layers that do not update their statistics in training (a frozen
encoder's, see finetune.EncoderFreezer) keep theirs. Data-parallel ranks sum their shards' statistics, so every
rank ends with the same ones.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from imgcls_cli.specs.loop import BNRecalibrateSpec

log = logging.getLogger("imgcls")
# bn_recalibrate=auto recalibrates while the run has taken fewer optimizer steps than this: with batch norm's
# default momentum 0.1 the running statistics then still hold more than 0.9^100 (3e-5) of their initial values,
# and describe the weights of the last ~10 steps, a large share of a short run.
AUTO_STEPS = 100
SAMPLE_STREAM = 800_011  # offsets the seed of the recalibration sample from the loader's


def active(spec: BNRecalibrateSpec, steps: int) -> bool:
    """Whether the statistics are recomputed after a run has taken `steps` optimizer steps."""
    return spec.when is True or (spec.when == "auto" and steps < AUTO_STEPS)


STATS = ("running_mean", "running_var", "num_batches_tracked")  # a batch-norm layer's running statistics


def _keeps_stats(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats


def norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers that keep running statistics."""
    return [m for m in model.modules() if _keeps_stats(m)]


def sample_positions(n: int, images: int, seed: int) -> torch.Tensor:
    """The fixed sample of the training split the statistics are computed over (sorted positions)."""
    if images >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + SAMPLE_STREAM)
    return torch.randperm(n, generator=gen)[:images].sort().values


def buffers(layers: list[nn.Module]) -> list[dict[str, torch.Tensor]]:
    """A copy of each layer's running statistics."""
    return [{k: getattr(m, k).detach().clone() for k in STATS} for m in layers]


def put_buffers(layers: list[nn.Module], saved: list[dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for m, state in zip(layers, saved):
            for k, v in state.items():
                getattr(m, k).copy_(v)


def state_names(model: nn.Module) -> list[str]:
    """The state_dict keys of the batch-norm statistics (what a checkpoint keeps of the training-time ones)."""
    return [f"{prefix}.{k}" if prefix else k for prefix, m in model.named_modules() if _keeps_stats(m) for k in STATS]


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, Any]], amp: Callable[[], Any],
                reduce: Callable[[list[float]], list[float]] | None = None) -> int:
    """Set every batch-norm layer's running mean and (unbiased) variance to those of its input over `batches`,
    the layers normalizing with batch statistics as in training; returns how many layers were set.

    reduce sums a list of numbers over the data-parallel ranks (every rank must call it).
    """
    layers = norm_layers(model)
    if not layers:
        return 0
    sums = [torch.zeros(3, dtype=torch.float64) for _ in layers]  # count, sum of means, sum of squares (x n)
    seen = [False] * len(layers)

    def collect(i: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if not module.training:  # kept in eval mode (a frozen encoder): its statistics stay as they are
                return
            x = args[0].detach().float()
            dims = [d for d in range(x.dim()) if d != 1]
            var, mean = torch.var_mean(x, dim=dims, correction=0)
            n = x.numel() // x.shape[1]
            mean, var = mean.double().cpu(), var.double().cpu()
            if sums[i].dim() == 1:
                sums[i] = torch.zeros(3, len(mean), dtype=torch.float64)
            sums[i] += torch.stack([torch.full_like(mean, n), n * mean, n * (var + mean * mean)])
            seen[i] = True
        return hook

    was_training = {m: m.training for m in model.modules()}
    saved = buffers(layers)
    model.eval()  # dropout and other random layers off: the pass draws no random number
    for m in layers:
        m.train()
    hooks = [m.register_forward_pre_hook(collect(i)) for i, m in enumerate(layers)]
    try:
        for x, _ in batches:
            with amp():
                model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in was_training.items():
            m.training = mode
        put_buffers(layers, saved)  # undo the layers' own momentum updates of this pass
    if reduce is not None:  # every rank the same layers in the same order: their sums side by side
        shapes = [s.shape for s in sums]
        flat = torch.tensor(reduce(torch.cat([s.flatten() for s in sums]).tolist()), dtype=torch.float64)
        sums = [t.view(shape) for t, shape in zip(flat.split([s.numel() for s in sums]), shapes)]
        seen = [s.dim() == 2 and bool(s[0].sum() > 0) for s in sums]
    done = 0
    for m, s, ok in zip(layers, sums, seen):
        if not ok or s.dim() != 2:
            continue
        n = s[0]
        mean = s[1] / n
        var = (s[2] / n - mean * mean).clamp_min(0) * n / (n - 1).clamp_min(1)  # unbiased, as batch norm keeps
        m.running_mean.copy_(mean.to(m.running_mean))
        m.running_var.copy_(var.to(m.running_var))
        done += 1
    return done


@contextlib.contextmanager
def recalibrated(models: list[nn.Module], batches: Callable[[], Iterable[tuple[torch.Tensor, Any]]],
                 amp: Callable[[], Any], reduce: Callable[[list[float]], list[float]] | None = None,
                 enabled: bool = True) -> Iterator[list[list[dict[str, torch.Tensor]]] | None]:
    """Within the block each model holds recalibrated statistics; on leaving it they hold their training-time ones
    again (which the next epoch continues from). Yields the training-time statistics (None when not enabled)."""
    if not enabled:
        yield None
        return
    layers = [norm_layers(m) for m in models]
    saved = [buffers(ls) for ls in layers]
    try:
        for model in models:
            recalibrate(model, batches(), amp, reduce)
        yield saved
    finally:
        for ls, state in zip(layers, saved):
            put_buffers(ls, state)
