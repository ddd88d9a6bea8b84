import math
import re
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.optim import OPTIMIZERS, build_optimizer, param_groups, penalty
from imgcls_cli.paths import CONF_DIR as CONF
from imgcls_cli.plots import plot_lr
from imgcls_cli.schedule import SCHEDULES, build_schedule, lr_scheduler
from imgcls_cli.specs import optimizer as optimizer_specs
from imgcls_cli.specs import schedule as schedule_specs
from imgcls_cli.specs.optimizer import SHARED_KEYS, OptimizerSpec
from imgcls_cli.specs.schedule import ScheduleSpec

ITERS_PER_EPOCH = 4


def build(model: nn.Module, cfg: dict, *args, **kwargs) -> torch.optim.Optimizer:
    return build_optimizer(model, OptimizerSpec.parse(cfg), *args, **kwargs)


def penalty_of(model: nn.Module, cfg: dict):
    return penalty(model, OptimizerSpec.parse(cfg))


def schedule(cfg: dict, epochs: int):
    return build_schedule(ScheduleSpec.parse(cfg), epochs)


def scheduled_lrs(cfg: dict, epochs: int, lr0: float = 0.5, iters_per_epoch: int = ITERS_PER_EPOCH) -> list[float]:
    """The lr of every iteration of a run: a real optimizer, stepped with its scheduler after every batch."""
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr0)
    sched = lr_scheduler(opt, schedule(cfg, epochs), iters_per_epoch)
    lrs = []
    for _ in range(epochs * iters_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def cosine_from_to(start: float, end: float, progress: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def onecycle_formula(t: float, T: float, pct: float = 0.3, start: float = 1 / 25, final: float = 1 / 25e4) -> float:
    peak = pct * T
    return cosine_from_to(start, 1, t / peak) if t < peak else cosine_from_to(1, final, (t - peak) / (T - peak))


# (config, factor at t epochs after warmup when the schedule runs T epochs); lr = lr0 * factor
SCHEDULE_FORMULAS = [
    ({"name": "constant"}, lambda t, T: 1.0),
    ({"name": "step", "step_size": 3, "gamma": 0.5}, lambda t, T: 0.5 ** math.floor(t / 3)),
    ({"name": "multistep", "milestones": [2, 5], "gamma": 0.1}, lambda t, T: 0.1 ** ((t >= 2) + (t >= 5))),
    ({"name": "exponential", "k": 0.3}, lambda t, T: math.exp(-0.3 * t)),
    ({"name": "cosine", "min_lr_ratio": 0.1}, lambda t, T: 0.1 + 0.5 * (1 - 0.1) * (1 + math.cos(math.pi * t / T))),
    ({"name": "onecycle"}, onecycle_formula),
    ({"name": "onecycle", "pct_start": 0.5, "start_ratio": 0.1, "final_ratio": 0.01},
     lambda t, T: onecycle_formula(t, T, 0.5, 0.1, 0.01)),
]


@pytest.mark.parametrize("warmup", [0, 2])
@pytest.mark.parametrize("cfg,formula", SCHEDULE_FORMULAS, ids=lambda v: v.get("name") if isinstance(v, dict) else "")
def test_schedules_follow_their_formulas_every_iteration(cfg, formula, warmup):
    epochs, lr0 = 10, 0.5
    lrs = scheduled_lrs({**cfg, "warmup_epochs": warmup}, epochs, lr0)
    for i, lr in enumerate(lrs):
        t = i / ITERS_PER_EPOCH
        expected = t / warmup if t < warmup else formula(t - warmup, epochs - warmup)
        assert lr == pytest.approx(lr0 * expected, rel=1e-9, abs=1e-9), (i, t)


def test_step_schedule_follows_its_formula():
    factor = schedule({"name": "step", "step_size": 3, "gamma": 0.5}, epochs=10)
    for t in [0, 1, 2.9, 3, 5.5, 6, 9.99]:
        assert factor(t) == pytest.approx(0.5 ** math.floor(t / 3))


def test_cosine_schedule_follows_its_formula():
    factor = schedule({"name": "cosine", "min_lr_ratio": 0.1}, epochs=8)
    for t in [0, 1, 2.5, 4, 7.9, 8]:
        expected = 0.1 + 0.5 * (1 - 0.1) * (1 + math.cos(math.pi * t / 8))
        assert factor(t) == pytest.approx(expected)
    assert factor(0) == pytest.approx(1.0) and factor(8) == pytest.approx(0.1)


def test_multistep_drops_at_each_milestone():
    factor = schedule({"name": "multistep", "milestones": [30, 60], "gamma": 0.1}, epochs=90)
    assert [factor(t) for t in (0, 29.99, 30, 59.9, 60, 89)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_exponential_decays_by_e_to_the_minus_k_per_epoch():
    factor = schedule({"name": "exponential", "k": 0.1}, epochs=30)
    assert factor(0) == 1.0
    assert factor(10) == pytest.approx(math.exp(-1)) and factor(10.5) / factor(10) == pytest.approx(math.exp(-0.05))


def test_onecycle_rises_to_the_peak_then_anneals_to_the_final_ratio():
    factor = schedule({"name": "onecycle"}, epochs=10)
    assert factor(0) == pytest.approx(1 / 25) and factor(3) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1 / 25e4)
    rising, falling = [factor(t / 10) for t in range(31)], [factor(t / 10) for t in range(30, 101)]
    assert all(a < b for a, b in zip(rising, rising[1:])) and all(a > b for a, b in zip(falling, falling[1:]))


def test_onecycle_has_the_shape_of_torchs_onecyclelr():
    epochs, iters, max_lr = 5, 200, 0.4
    ours = scheduled_lrs({"name": "onecycle"}, epochs, max_lr, iters)
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=max_lr)
    torchs = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=epochs * iters, pct_start=0.3,
                                                 anneal_strategy="cos", cycle_momentum=False)
    for ours_lr in ours:
        assert ours_lr == pytest.approx(opt.param_groups[0]["lr"], abs=0.01 * max_lr)
        opt.step()
        torchs.step()


def test_warmup_ramps_linearly_then_hands_over():
    factor = schedule({"name": "cosine", "warmup_epochs": 2}, epochs=10)
    assert factor(1) == pytest.approx(0.5)
    assert factor(2) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(0.0, abs=1e-9)


def test_scheduler_steps_every_iteration():
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = lr_scheduler(opt, schedule({"name": "cosine"}, epochs=2), iters_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[4] == pytest.approx(0.5)  # half-way through T = 2 epochs
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_weight_decay_skips_biases_and_norms():
    model = small_net()
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_decay_norm_and_bias_decays_every_parameter():
    model = small_net()
    opt = build(model, {"name": "sgd", "lr": 0.1, "weight_decay": 0.01, "decay_norm_and_bias": True})
    [group] = opt.param_groups
    assert group["weight_decay"] == 0.01 and len(group["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD),
                                      ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_optimizers_build_from_config(name, cls):
    opt = build(nn.Linear(3, 2), {"name": name, "lr": 0.01, "weight_decay": 0.1})
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.01


class Tiny(nn.Module):
    """A weight matrix (decayed) and a bias (not), in float64 so that the update rules compare tightly."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor([0.3, -0.7], dtype=torch.float64))


GRADS = {"weight": [torch.tensor([[0.2, -0.4], [1.0, 0.05]]), torch.tensor([[-0.1, -0.3], [0.5, 0.2]])],
         "bias": [torch.tensor([0.6, -0.02]), torch.tensor([0.1, 0.3])]}


def sgd_rule(w, grads, lr, wd, momentum=0.9, nesterov=False):
    buf = None
    for g in grads:
        g = g + wd * w
        buf = g if buf is None else momentum * buf + g
        w = w - lr * (g + momentum * buf if nesterov else buf)
    return w


def adam_rule(w, grads, lr, wd, betas=(0.9, 0.999), eps=1e-8, decoupled=False):
    (b1, b2), m, v = betas, 0, 0
    for t, g in enumerate(grads, 1):
        if decoupled:
            w = w - lr * wd * w
        else:
            g = g + wd * w
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        w = w - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    return w


def rmsprop_rule(w, grads, lr, wd, alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
    v, mean, buf = 0, 0, 0
    for g in grads:
        g = g + wd * w
        v, mean = alpha * v + (1 - alpha) * g**2, alpha * mean + (1 - alpha) * g
        step = g / ((v - mean**2 if centered else v).sqrt() + eps)
        buf = momentum * buf + step
        w = w - lr * buf
    return w


@pytest.mark.parametrize("cfg,rule", [
    ({"name": "sgd", "momentum": 0.9}, sgd_rule),
    ({"name": "sgd", "momentum": 0.8, "nesterov": True}, lambda *a: sgd_rule(*a, momentum=0.8, nesterov=True)),
    ({"name": "sgd", "momentum": 0.0}, lambda *a: sgd_rule(*a, momentum=0.0)),
    ({"name": "adam", "betas": [0.8, 0.9]}, lambda *a: adam_rule(*a, betas=(0.8, 0.9))),
    ({"name": "adamw"}, lambda *a: adam_rule(*a, decoupled=True)),
    ({"name": "rmsprop"}, rmsprop_rule),
    ({"name": "rmsprop", "alpha": 0.9, "eps": 0.1, "momentum": 0.5, "centered": True},
     lambda *a: rmsprop_rule(*a, alpha=0.9, eps=0.1, momentum=0.5, centered=True)),
], ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_optimizer_steps_follow_the_update_rule(cfg, rule):
    lr, wd = 0.1, 0.05
    model = Tiny()
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    opt = build(model, {**cfg, "lr": lr, "weight_decay": wd})
    for step in range(2):
        for name, p in model.named_parameters():
            p.grad = GRADS[name][step].double()
        opt.step()
    grads = {name: [g.double() for g in gs] for name, gs in GRADS.items()}
    torch.testing.assert_close(model.weight.detach(), rule(start["weight"], grads["weight"], lr, wd))
    torch.testing.assert_close(model.bias.detach(), rule(start["bias"], grads["bias"], lr, 0.0))  # bias: no decay


def test_penalty_value_and_gradient_follow_the_formulas():
    model = small_net()
    total = penalty_of(model, {"name": "sgd", "lr": 0.1, "l1": 0.01, "l2": 0.1})
    weights = [p for p in model.parameters() if p.ndim > 1]
    expected = sum(0.01 * w.abs().sum() + 0.1 * (w**2).sum() for w in weights)
    value = total()
    assert value.ndim == 0 and value.item() == pytest.approx(expected.item())
    value.backward()
    for w in weights:
        torch.testing.assert_close(w.grad, 0.01 * torch.sign(w) + 2 * 0.1 * w)
    assert all(p.grad is None for p in model.parameters() if p.ndim <= 1)  # biases and norm parameters


@pytest.mark.parametrize("l1,l2", [(0.02, 0.0), (0.0, 0.3)])
def test_each_penalty_alone_and_with_norms_and_biases(l1, l2):
    model = small_net()
    penalty_of(model, {"name": "adam", "lr": 0.1, "l1": l1, "l2": l2, "decay_norm_and_bias": True})().backward()
    for p in model.parameters():
        torch.testing.assert_close(p.grad, l1 * torch.sign(p) + 2 * l2 * p)


def test_no_penalty_by_default():
    assert penalty_of(small_net(), {"name": "adamw", "lr": 0.1, "weight_decay": 0.05}) is None
    assert penalty_of(small_net(), {"name": "adamw", "lr": 0.1, "l1": 0, "l2": 0.0}) is None


def test_l2_penalty_with_sgd_is_weight_decay_of_twice_its_strength():
    x, y = torch.randn(8, 1, 3, 3, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1] * 4)
    by_penalty, by_decay = small_net(), small_net()
    opt_penalty = build(by_penalty, {"name": "sgd", "lr": 0.1, "weight_decay": 0.0, "l2": 0.05})
    opt_decay = build(by_decay, {"name": "sgd", "lr": 0.1, "weight_decay": 0.1})
    extra = penalty_of(by_penalty, {"name": "sgd", "lr": 0.1, "l2": 0.05})
    for _ in range(2):
        for model, opt, add in ((by_penalty, opt_penalty, extra), (by_decay, opt_decay, None)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            (loss + add() if add else loss).backward()
            opt.step()
    for a, b in zip(by_penalty.parameters(), by_decay.parameters()):
        torch.testing.assert_close(a, b)


def test_training_options_defaults_and_values():
    plain = OptimizerSpec.parse({"name": "sgd", "lr": 0.1})
    assert (plain.grad_clip_norm, plain.accumulate_steps) == (None, 1)
    given = OptimizerSpec.parse({"name": "sgd", "lr": 0.1, "grad_clip_norm": 1, "accumulate_steps": 4})
    assert (given.grad_clip_norm, given.accumulate_steps) == (1.0, 4)


def test_loop_keys_never_reach_the_optimizer():
    cfg = {"name": "sgd", "lr": 0.1, "base_lr": 0.2, "l1": 0.1, "l2": 0.1, "grad_clip_norm": 1.0,
           "accumulate_steps": 2, "decay_norm_and_bias": True}
    assert OptimizerSpec.parse(cfg).kwargs == {"momentum": 0.9, "nesterov": False}  # sgd's own keys alone
    opt = build(small_net(), cfg, batch_size=128)
    assert not {"l1", "l2", "grad_clip_norm", "accumulate_steps", "base_lr"} & set(opt.defaults)


def test_base_lr_scales_with_the_images_per_step():
    cfg = {"name": "sgd", "lr": 5.0, "base_lr": 0.1}
    assert [build(small_net(), cfg, batch_size=b).param_groups[0]["lr"] for b in (64, 256, 512)] == \
        pytest.approx([0.025, 0.1, 0.2])
    assert OptimizerSpec.parse({**cfg, "accumulate_steps": 4}).lr_for(64) == pytest.approx(0.1)  # 64 x 4 a step
    assert OptimizerSpec.parse({**cfg, "lr": "ignored"}).lr_for(128) == pytest.approx(0.05)
    assert OptimizerSpec.parse({"name": "sgd", "lr": 0.3}).lr_for(512) == 0.3  # no base_lr: batch size changes nothing


def test_base_lr_needs_the_batch_size():
    with pytest.raises(ValueError, match="pass batch_size"):
        build(small_net(), {"name": "sgd", "lr": 0.1, "base_lr": 0.1})


@pytest.mark.parametrize("cfg,message", [
    ({"name": "adam", "lr": -1}, "optimizer.lr must be positive"),
    ({"name": "adam", "lr": "abc"}, "optimizer.lr must be a number"),
    ({"name": "adm", "lr": 0.1}, "Did you mean adam"),
    ({"name": "adam", "lr": 0.1, "base_lr": 0}, "optimizer.base_lr must be positive"),
    ({"name": "adam", "lr": 0.1, "weight_decay": -0.1}, "optimizer.weight_decay must be >= 0"),
    ({"name": "adam", "lr": 0.1, "l1": -1}, "optimizer.l1 must be >= 0"),
    ({"name": "adam", "lr": 0.1, "l2": "x"}, "optimizer.l2 must be a number"),
    ({"name": "adam", "lr": 0.1, "decay_norm_and_bias": "no"}, "optimizer.decay_norm_and_bias must be true or false"),
    ({"name": "adam", "lr": 0.1, "grad_clip_norm": 0}, "optimizer.grad_clip_norm must be positive"),
    ({"name": "adam", "lr": 0.1, "accumulate_steps": 0}, "optimizer.accumulate_steps must be a whole number >= 1"),
    ({"name": "adam", "lr": 0.1, "accumulate_steps": 1.5}, "optimizer.accumulate_steps must be a whole number"),
    ({"name": "adam", "lr": 0.1, "betas": [0.9]}, "optimizer.betas must be two numbers in [0, 1)"),
    ({"name": "adamw", "lr": 0.1, "betas": [0.9, 1.0]}, "optimizer.betas must be in [0, 1)"),
    ({"name": "adam", "lr": 0.1, "eps": 0}, "optimizer.eps must be positive"),
    ({"name": "sgd", "lr": 0.1, "momentum": -0.1}, "optimizer.momentum must be >= 0"),
    ({"name": "sgd", "lr": 0.1, "nesterov": "yes"}, "optimizer.nesterov must be true or false"),
    ({"name": "rmsprop", "lr": 0.1, "alpha": 1}, "optimizer.alpha must be in [0, 1)"),
    ({"name": "rmsprop", "lr": 0.1, "momentum": -1}, "optimizer.momentum must be >= 0"),
    ({"name": "rmsprop", "lr": 0.1, "centered": "true"}, "optimizer.centered must be true or false"),
])
def test_bad_optimizer_values_are_user_errors(cfg, message):
    for check in (OptimizerSpec.parse, lambda c: build(nn.Linear(3, 2), c, batch_size=64)):
        with pytest.raises(UserError, match=re.escape(message)) as info:
            check(cfg)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("cfg,message", [
    ({"name": "step", "step_size": 0}, "schedule.step_size must be positive"),
    ({"name": "step", "gamma": 0}, "schedule.gamma must be positive"),
    ({"name": "multistep", "milestones": 30}, "schedule.milestones must be a list of epochs"),
    ({"name": "multistep", "milestones": [10, -1]}, "schedule.milestones must be epochs >= 0"),
    ({"name": "multistep", "milestones": [10, "x"]}, "schedule.milestones must be a number"),
    ({"name": "multistep", "gamma": -0.5}, "schedule.gamma must be positive"),
    ({"name": "exponential", "k": -0.1}, "schedule.k must be >= 0"),
    ({"name": "exponential", "k": "fast"}, "schedule.k must be a number"),
    ({"name": "cosine", "min_lr_ratio": 1.5}, "schedule.min_lr_ratio must be in [0, 1]"),
    ({"name": "onecycle", "pct_start": 1}, "schedule.pct_start must be in [0, 1)"),
    ({"name": "onecycle", "start_ratio": 0}, "schedule.start_ratio must be in (0, 1]"),
    ({"name": "onecycle", "final_ratio": -1}, "schedule.final_ratio must be in [0, 1]"),
    ({"name": "cosine", "warmup_epochs": -1}, "schedule.warmup_epochs must be >= 0"),
    ({"name": "cosin"}, "Did you mean cosine"),
])
def test_bad_schedule_values_are_user_errors(cfg, message):
    with pytest.raises(UserError, match=re.escape(message)) as info:
        schedule(cfg, epochs=3)
    assert "\n" not in str(info.value)


def load(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # as Hydra composes it


def test_every_optimizer_yaml_builds_with_its_values():
    paths = sorted((CONF / "optimizer").glob("*.yaml"))
    assert {"sgd", "adam", "adamw", "rmsprop"} <= {p.stem for p in paths}
    model = small_net()
    for path in paths:
        cfg = load(path)
        options = OptimizerSpec.parse(cfg)
        opt = build(model, cfg, batch_size=64)
        assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups[0]["lr"] == cfg["lr"], path.name
        assert opt.param_groups[0]["weight_decay"] == cfg["weight_decay"] and opt.param_groups[1]["weight_decay"] == 0
        for key, value in options.kwargs.items():  # the optimizer's own keys all reach torch
            assert opt.defaults[key] == (tuple(value) if isinstance(value, list) else value), (path.name, key)
        assert set(cfg) - set(options.kwargs) <= {"name", *SHARED_KEYS}
        assert (options.grad_clip_norm, options.accumulate_steps) == (None, 1) and penalty_of(model, cfg) is None


def test_every_schedule_yaml_documents_its_formula_and_keys_and_builds():
    paths = sorted((CONF / "schedule").glob("*.yaml"))
    assert {"constant", "step", "cosine", "multistep", "exponential", "onecycle"} <= {p.stem for p in paths}
    assert set(SCHEDULES.names()) == {load(p)["name"] for p in paths}
    for path in paths:
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# ") and len(lines[0]) > 10, path.name
        assert all("#" in line for line in lines[1:] if line and not line.startswith("name:")), path.name
        lrs = scheduled_lrs(load(path), epochs=90, lr0=1.0, iters_per_epoch=2)
        assert all(0 <= lr <= 1 for lr in lrs) and lrs[0] > 0, path.name


def test_optimizer_registry_matches_the_yaml_options():
    assert set(OPTIMIZERS.names()) == {load(p)["name"] for p in (CONF / "optimizer").glob("*.yaml")}


def test_every_builder_has_a_checker_of_its_keys():
    assert OPTIMIZERS.names() == optimizer_specs.OPTIONS.names()
    assert SCHEDULES.names() == schedule_specs.OPTIONS.names()


def test_plot_lr_writes_a_png_over_epochs(tmp_path):
    path = tmp_path / "plots" / "lr.png"
    plot_lr(scheduled_lrs({"name": "onecycle", "warmup_epochs": 0}, epochs=6), ITERS_PER_EPOCH, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list(path.parent.iterdir()) == [path]
    image = mpimg.imread(path)
    assert image.shape[0] >= 300 and (image != image[0, 0]).any(axis=-1).mean() > 0.01
    with pytest.raises(ValueError):
        plot_lr([], ITERS_PER_EPOCH, tmp_path / "empty.png")
