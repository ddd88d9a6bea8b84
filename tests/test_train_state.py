"""TrainState: a state saved as last.pt is (weights, optimizer, schedule, EMA, RNG) and read back continues training
exactly as if never stopped; a new stateful feature is one registration; the checkpoints keep their documented
keys."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY
from imgcls_cli.engine import ema
from imgcls_cli.engine.distributed import Dist
from imgcls_cli.engine.state import EarlyStopping, TrainState
from imgcls_cli.specs.loop import EmaSpec


def tiny_state(tmp_path, init_seed: int, decay: float | None = 0.9) -> TrainState:
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)
    state = TrainState(model, optimizer, scheduler, None, EarlyStopping("val_accuracy", "max", 0), header={},
                       checkpoints=tmp_path, ctx=Dist())
    ema.attach(state, EmaSpec(decay))
    return state


def train_steps(state: TrainState, n: int) -> None:
    """n optimizer steps on data (and dropout masks) drawn from the global RNG."""
    state.model.train()
    for _ in range(n):
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        F.cross_entropy(state.model(x), y).backward()
        state.optimizer.step()
        state.optimizer.zero_grad()
        state.scheduler.step()
        state.after_step()


def test_a_state_saved_and_loaded_continues_exactly_as_an_uninterrupted_run(tmp_path):
    torch.manual_seed(7)
    straight = tiny_state(tmp_path, init_seed=0)
    train_steps(straight, 6)

    torch.manual_seed(7)
    first = tiny_state(tmp_path, init_seed=0)
    train_steps(first, 3)
    torch.save(first.state_dict(first.weights(), position=None), tmp_path / "last.pt")
    torch.rand(100)  # another process, other random numbers drawn before the resume
    resumed = tiny_state(tmp_path, init_seed=1)
    resumed.load_state_dict(torch.load(tmp_path / "last.pt", weights_only=True))
    train_steps(resumed, 3)

    assert resumed.step == straight.step == 6
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.parts["ema"].module.state_dict().values(),
                    resumed.parts["ema"].module.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


class StepCounter:
    """The smallest stateful feature: its own state and an after_step hook, nothing else."""

    def __init__(self) -> None:
        self.steps = 0

    def after_step(self, model: nn.Module) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])


def test_a_new_stateful_feature_is_one_registration(tmp_path):
    state = tiny_state(tmp_path, init_seed=0, decay=None)
    state.register("counter", StepCounter())
    state.register("off", None)  # a feature that is off is saved as None
    train_steps(state, 4)
    saved = state.state_dict(state.weights(), position=None)
    assert saved["counter"] == {"steps": 4} and saved["off"] is None and saved["ema"] is None
    assert saved["best"]["ema"] == -1.0  # the EMA's own best (none without EMA), as last.pt always held

    fresh = tiny_state(tmp_path, init_seed=1, decay=None)
    fresh.register("counter", StepCounter())
    fresh.load_state_dict(saved)
    assert fresh.parts["counter"].steps == 4 and fresh.step == 4
    with pytest.raises(ValueError, match="already registered"):
        fresh.register("counter", StepCounter())


LAST_KEYS = {"format", "format_version", "model", "classes", "input", "config", "state_dict", "epoch", "step",
             "distributed", "ranks", "metrics", "optimizer", "scheduler", "scaler", "rng", "best", "ema", "position",
             "domain", "bn_train_stats", "throughput"}
MODEL_KEYS = {"format", "format_version", "model", "classes", "input", "config", "state_dict", "epoch", "step",
              "metrics"}


def test_checkpoints_keep_their_keys_and_load_with_weights_only(tmp_path):
    from test_trust_training import train_spec

    from imgcls_cli.checkpoint import load_checkpoint
    from imgcls_cli.engine.train import run_training

    run_training(train_spec(*TINY[:-1], "epochs=1", "dataset.num_samples=200", "ema.decay=0.9"), tmp_path)
    ckpts = tmp_path / "checkpoints"
    last = torch.load(ckpts / "last.pt", weights_only=True)
    assert set(last) == LAST_KEYS
    assert set(last["best"]) == {"score", "epoch", "bad_epochs", "ema"} and last["best"]["ema"] > 0
    assert set(last["ema"]) == {"state_dict", "updates"} and last["ema"]["updates"] == last["step"]
    assert last["position"] is None and last["domain"] is None and last["epoch"] == 1
    assert last["throughput"]["images"] > 0 and last["throughput"]["seconds"] > 0  # the run's rate, across resumes
    for name in ("best.pt", "best_ema.pt"):
        assert set(torch.load(ckpts / name, weights_only=True)) == MODEL_KEYS
        assert load_checkpoint(ckpts / name)["epoch"] == 1
    assert load_checkpoint(ckpts / "best_ema.pt")["metrics"]["val_accuracy"] == last["best"]["ema"]
