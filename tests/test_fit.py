"""The training loop itself (engine/fit.py): non-finite losses, gradient accumulation and clipping, penalties."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from imgcls_cli.engine.fit import NonFiniteLoss, StepOptions, train_one_epoch


def batches(n_batches: int, size: int = 8, nan_at: int | None = None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        x = torch.randn(size, 6, generator=gen)
        if b == nan_at:
            x[0, 0] = float("nan")
        out.append((x, torch.randint(0, 3, (size,), generator=gen)))
    return out


def setup(lr: float = 0.1):
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    return model, optimizer, scheduler


def run(data, options=None, lr: float = 0.1, **kwargs):
    model, optimizer, scheduler = setup(lr)
    result = train_one_epoch(model, data, optimizer, scheduler, nn.CrossEntropyLoss(), contextlib.nullcontext,
                             options=options, **kwargs)
    return model, result, scheduler


def test_a_nan_loss_stops_naming_its_step():
    with pytest.raises(NonFiniteLoss, match="at step 3"):
        run(batches(6, nan_at=2))


def test_skip_batch_leaves_the_bad_batch_out_and_counts_it():
    model, result, scheduler = run(batches(6, nan_at=2), StepOptions(on_nan="skip_batch"))
    assert result.skipped == 1 and result.images == 5 * 8
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert scheduler.last_epoch == 5  # one optimizer step per good batch


def test_accumulating_two_batches_is_one_step_on_their_union():
    data = batches(4)
    union = [(torch.cat([data[i][0], data[i + 1][0]]), torch.cat([data[i][1], data[i + 1][1]])) for i in (0, 2)]
    accumulated, result, scheduler = run(data, StepOptions(accumulate_steps=2))
    whole, _, _ = run(union)
    assert scheduler.last_epoch == 2 and result.images == 32
    for a, b in zip(accumulated.parameters(), whole.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_an_odd_last_batch_still_takes_its_step():
    _, _, scheduler = run(batches(5), StepOptions(accumulate_steps=2))
    assert scheduler.last_epoch == 3


def test_gradient_clipping_bounds_the_update():
    before = setup(lr=1.0)[0].weight.detach().clone()
    model, _, _ = run(batches(1), StepOptions(grad_clip_norm=1e-3), lr=1.0)
    update = torch.cat([(model.weight - before).flatten(), model.bias.detach().flatten() - setup()[0].bias.flatten()])
    assert update.norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_a_penalty_is_added_to_the_loss():
    model, optimizer, scheduler = setup()
    penalty = lambda: 4.0 * model.weight.pow(2).sum()  # noqa: E731 - a strong L2 term: w <- 0.2 w each step
    train_one_epoch(model, batches(3), optimizer, scheduler, nn.CrossEntropyLoss(), contextlib.nullcontext,
                    options=StepOptions(penalty=penalty))
    plain, _, _ = run(batches(3))
    assert model.weight.norm() < 0.3 * plain.weight.norm()
