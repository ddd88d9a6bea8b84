import math

import pytest
import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.optim import build_optimizer, param_groups
from imgcls_cli.schedule import build_schedule, lr_scheduler


def test_step_schedule_follows_its_formula():
    factor = build_schedule({"name": "step", "step_size": 3, "gamma": 0.5}, epochs=10)
    for t in [0, 1, 2.9, 3, 5.5, 6, 9.99]:
        assert factor(t) == pytest.approx(0.5 ** math.floor(t / 3))


def test_cosine_schedule_follows_its_formula():
    factor = build_schedule({"name": "cosine", "min_lr_ratio": 0.1}, epochs=8)
    for t in [0, 1, 2.5, 4, 7.9, 8]:
        expected = 0.1 + 0.5 * (1 - 0.1) * (1 + math.cos(math.pi * t / 8))
        assert factor(t) == pytest.approx(expected)
    assert factor(0) == pytest.approx(1.0) and factor(8) == pytest.approx(0.1)


def test_warmup_ramps_linearly_then_hands_over():
    factor = build_schedule({"name": "cosine", "warmup_epochs": 2}, epochs=10)
    assert factor(1) == pytest.approx(0.5)
    assert factor(2) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(0.0, abs=1e-9)


def test_scheduler_steps_every_iteration():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = lr_scheduler(opt, build_schedule({"name": "cosine"}, epochs=2), iters_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[4] == pytest.approx(0.5)  # half-way through T = 2 epochs
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_weight_decay_skips_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD),
                                      ("adamw", torch.optim.AdamW)])
def test_optimizers_build_from_config(name, cls):
    opt = build_optimizer(nn.Linear(3, 2), {"name": name, "lr": 0.01, "weight_decay": 0.1})
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("cfg,message", [
    ({"name": "adam", "lr": -1}, "optimizer.lr must be positive"),
    ({"name": "adam", "lr": "abc"}, "optimizer.lr must be a number"),
    ({"name": "adm", "lr": 0.1}, "Did you mean adam"),
])
def test_bad_optimizer_values_are_user_errors(cfg, message):
    with pytest.raises(UserError, match=message):
        build_optimizer(nn.Linear(3, 2), cfg)


def test_bad_schedule_values_are_user_errors():
    with pytest.raises(UserError, match="step_size must be positive"):
        build_schedule({"name": "step", "step_size": 0}, epochs=3)
