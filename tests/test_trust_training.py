"""Training's numbers and refusals a user can trust: short runs evaluated with batch-norm statistics of their
own weights, a progress bar that shows real numbers by wall time, distillation's task loss apart from its
distillation term, and a resume that refuses in one line what cannot carry over."""
from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from conftest import (TINY, assert_ok, assert_user_error, compose_plain, read_csv, read_json, run_cli,
                      run_in_one_process)
from imgcls_cli.errors import UserError


def compose_train(*overrides: str) -> dict:
    """conf/train.yaml with overrides, as a plain dict."""
    return compose_plain("train", *overrides)


def train_spec(*overrides: str) -> Any:
    """The TrainSpec the engine takes, as `imgcls train` parses it."""
    from imgcls_cli.specs.train import TrainSpec

    return TrainSpec.parse(compose_train(*overrides))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- 3: batch-norm statistics recomputed with the current weights --------------------------------------------

class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.bn(self.conv(x)).mean((2, 3))))


def test_recalibration_sets_running_stats_to_the_data_statistics_without_drawing_random_numbers():
    from imgcls_cli.engine.precise_bn import recalibrate

    torch.manual_seed(0)
    model = ConvBN().train()
    data = [torch.randn(8, 3, 6, 6) * 3 + 2 for _ in range(3)]
    with torch.no_grad():
        features = torch.cat([model.conv(x) for x in data])  # what the batch-norm layer sees, all batches
    rng = torch.get_rng_state()
    assert recalibrate(model, [(x, None) for x in data], contextlib.nullcontext) == 1
    assert torch.equal(torch.get_rng_state(), rng)  # no dropout mask drawn: a resume recalibrates alike
    mean, var = features.mean((0, 2, 3)), features.var((0, 2, 3), unbiased=True)
    assert torch.allclose(model.bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(model.bn.running_var, var, rtol=1e-4)
    assert int(model.bn.num_batches_tracked) == 0  # the layer's own counter is left as it was
    assert model.training and model.drop.training  # the model's modes are put back


def test_recalibration_leaves_a_frozen_encoders_statistics_alone():
    from imgcls_cli.engine.finetune import EncoderFreezer
    from imgcls_cli.engine.precise_bn import recalibrate

    torch.manual_seed(0)
    model = ConvBN()
    before = model.bn.running_mean.clone(), model.bn.running_var.clone()
    EncoderFreezer(model, num_classes=2).freeze()
    recalibrate(model.train(), [(torch.randn(8, 3, 6, 6) + 5, None)], contextlib.nullcontext)
    assert torch.equal(model.bn.running_mean, before[0]) and torch.equal(model.bn.running_var, before[1])


def test_data_parallel_ranks_recalibrate_from_their_summed_statistics():
    """Two shards reduced by a sum give the statistics of the whole data, as one process over it does."""
    from imgcls_cli.engine.precise_bn import recalibrate

    torch.manual_seed(0)
    whole, shards = ConvBN(), []
    data = [torch.randn(8, 3, 6, 6) * 2 - 1 for _ in range(4)]
    recalibrate(whole, [(x, None) for x in data], contextlib.nullcontext)
    sums: list[list[float]] = []
    for rank in range(2):  # each rank's local sums, gathered; then both ranks apply the total
        replica = ConvBN()
        replica.load_state_dict(whole.state_dict())
        recalibrate(replica, [(x, None) for x in data[rank::2]], contextlib.nullcontext,
                    reduce=lambda values: sums.append(values) or values)
        shards.append(replica)
    total = [a + b for a, b in zip(*sums)]
    for replica in shards:
        recalibrate(replica, [(x, None) for x in data[shards.index(replica)::2]], contextlib.nullcontext,
                    reduce=lambda values: total)
        assert torch.allclose(replica.bn.running_mean, whole.bn.running_mean, atol=1e-5)
        assert torch.allclose(replica.bn.running_var, whole.bn.running_var, rtol=1e-4)


def test_bad_bn_recalibrate_settings_are_user_errors_and_auto_recalibrates_the_first_100_steps():
    from imgcls_cli.engine.precise_bn import active
    from imgcls_cli.specs.loop import BNRecalibrateSpec

    with pytest.raises(UserError, match="bn_recalibrate must be auto, true or false"):
        BNRecalibrateSpec.parse({"bn_recalibrate": "sometimes"})
    with pytest.raises(UserError, match="bn_recalibrate_images"):
        BNRecalibrateSpec.parse({"bn_recalibrate_images": 0})
    auto, on, off = (BNRecalibrateSpec.parse({"bn_recalibrate": w}) for w in ("auto", True, False))
    assert active(auto, 99) and not active(auto, 100)
    assert active(on, 10**6) and not active(off, 0)


def test_a_quick_digits_run_learns_and_best_pt_holds_the_statistics_it_was_scored_with(tmp_path):
    """The docs' quick run: validation and test no longer score at chance (0.10) with running statistics that saw
    ~10 steps (batch_size=auto takes 18 images a step for 300 training images, and batch norm is recalibrated);
    best.pt, run again here in fp32 as the run was, gives train's test accuracy."""
    from imgcls_cli.checkpoint import load_checkpoint
    from imgcls_cli.data.datasets import load_dataset
    from imgcls_cli.engine.inference import model_from_checkpoint

    run_dir = tmp_path / "quick"
    result = run_cli("train", "dataset.max_train_samples=300", "epochs=2", "precision=fp32", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_ok(result)
    summary = read_json(run_dir / "summary.json")
    assert summary["batch_size"] == 18
    assert "batch_size auto: 18 (300 training images" in (run_dir / "train.log").read_text()
    assert summary["test_accuracy"] >= 0.85
    assert float(read_csv(run_dir / "metrics.csv")[-1]["val_accuracy"]) >= 0.85
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    bundle = load_dataset(best["config"]["dataset"], best["config"]["seed"])
    test = bundle.splits["test"]
    model = model_from_checkpoint(best, torch.device("cpu")).eval()
    x = (test.images.float() / 255 - torch.tensor(bundle.mean).view(1, -1, 1, 1)) / torch.tensor(
        bundle.std).view(1, -1, 1, 1)
    with torch.no_grad():
        correct = int((model(x).argmax(1) == test.labels).sum())
    assert correct == round(summary["test_accuracy"] * len(test))


def test_batch_size_auto_keeps_64_unless_the_training_split_is_small():
    """auto: 64 images a step, fewer so that a small training split still takes about 16 steps an epoch (never
    under 16 images a step); a number is taken as it is, anything else is one line."""
    from imgcls_cli.engine.build import auto_batch_size

    assert auto_batch_size(1169) == 64 and auto_batch_size(60000) == 64
    assert auto_batch_size(300) == 18 and -(-300 // 18) >= 16
    assert auto_batch_size(100) == 16 and auto_batch_size(1) == 16
    assert auto_batch_size(600, world_size=2) == 18  # each process its share
    assert train_spec("batch_size=auto").batch_size is None and train_spec("batch_size=32").batch_size == 32
    for bad in (0, -1, "big", 2.5):
        with pytest.raises(UserError, match="batch_size"):
            train_spec(f"batch_size={bad}")


def test_training_continues_from_its_running_statistics_and_last_pt_keeps_both(tmp_path):
    """Recalibration changes what is evaluated and saved, never the training: the losses are those of a run
    without it, and last.pt carries the running statistics a resume continues from."""
    from imgcls_cli.engine.train import run_training

    common = [*TINY[:-1], "epochs=2", "dataset.num_samples=200"]
    rows = {}
    for when in ("true", "false"):
        run_training(train_spec(*common, f"bn_recalibrate={when}"), tmp_path / when)
        rows[when] = read_csv(tmp_path / when / "metrics.csv")
    assert [r["train_loss"] for r in rows["true"]] == [r["train_loss"] for r in rows["false"]]
    last = torch.load(tmp_path / "true" / "checkpoints" / "last.pt", weights_only=True)
    plain = torch.load(tmp_path / "false" / "checkpoints" / "last.pt", weights_only=True)
    assert plain["bn_train_stats"] is None and last["bn_train_stats"]
    for key, value in last["bn_train_stats"].items():
        assert torch.equal(value, plain["state_dict"][key])  # the running statistics, as without recalibration
    assert any(not torch.equal(last["state_dict"][k], v) for k, v in last["bn_train_stats"].items()
               if "running_mean" in k)


# --- 16: the progress bar ------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slow_batches(clock: FakeClock, count: int, seconds: float):
    """Batches that each take `seconds` of (fake) wall time to arrive."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(count):
        clock.now += seconds
        yield torch.randn(4, 6, generator=gen), torch.randint(0, 3, (4,), generator=gen)


class Recording:
    """An EpochProgress whose updates are counted and whose shown text is kept, rendered as a terminal shows it."""

    def __init__(self, clock: FakeClock) -> None:
        from imgcls_cli.console import EpochProgress

        self.screen = io.StringIO()
        self.bar = EpochProgress("epoch 1/1", 100, clock=clock,
                                 output=Console(file=self.screen, force_terminal=True, width=200))
        self.updates: list[str] = []

    def due(self) -> bool:
        return self.bar.due()

    def update(self, images: int, loss: float, acc: float) -> None:
        self.bar.update(images, loss, acc)
        self.updates.append(self.bar.text())

    def rendered(self) -> str:
        recorder = Console(record=True, file=io.StringIO(), width=200)
        recorder.print(self.bar.progress.get_renderable())
        return recorder.export_text()


def one_epoch(progress: Recording, batches) -> None:
    from imgcls_cli.engine.fit import train_one_epoch

    model = nn.Linear(6, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    train_one_epoch(model, batches, optimizer, scheduler, nn.CrossEntropyLoss(), contextlib.nullcontext,
                    progress=progress)


def test_the_progress_bar_shows_no_numbers_before_the_first_batch_then_real_ones():
    clock = FakeClock()
    progress = Recording(clock)
    assert progress.bar.text() == "" and "loss" not in progress.rendered()
    with progress.bar:
        one_epoch(progress, slow_batches(clock, 3, 0.01))
    assert progress.updates and all("loss 0.0000 acc 0.00%" not in text for text in progress.updates)
    assert progress.updates[0].startswith("loss ") and "loss" in progress.rendered()
    assert "loss 0.0000" not in progress.screen.getvalue()


def test_the_progress_bar_refreshes_by_wall_time_not_by_step_count():
    fast, slow = FakeClock(), FakeClock()
    every_step, by_time = Recording(slow), Recording(fast)
    with every_step.bar:  # 2 s a step: every step is shown
        one_epoch(every_step, slow_batches(slow, 12, 2.0))
    with by_time.bar:  # 0.05 s a step: the first step, then one update each 0.5 s (10 steps), then the end
        one_epoch(by_time, slow_batches(fast, 40, 0.05))
    assert len(every_step.updates) == 12
    assert 4 <= len(by_time.updates) <= 6


def test_without_a_terminal_the_bar_never_asks_for_the_numbers(monkeypatch):
    from imgcls_cli.console import EpochProgress

    monkeypatch.setattr("sys.stdout", io.StringIO())
    bar = EpochProgress("epoch 1/1", 10)
    assert not bar.due()  # so the loop reads no loss (no device sync) mid-epoch


# --- 20: distillation's columns ------------------------------------------------------------------------------

def test_distillation_reports_the_task_loss_and_the_distillation_term_apart():
    from imgcls_cli.engine.distill import distillation_terms
    from imgcls_cli.engine.fit import StepOptions, train_one_epoch

    torch.manual_seed(0)
    student, teacher = nn.Linear(6, 3), nn.Linear(6, 3)
    batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)  # the weights stay: the expected sums are simple
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    options = StepOptions(teacher=lambda x: teacher(x).detach(),
                          distill=lambda s, t, hard: distillation_terms(s, t, hard, 4.0, 0.7))
    result = train_one_epoch(student, batches, optimizer, scheduler, nn.CrossEntropyLoss(), contextlib.nullcontext,
                             options=options)
    with torch.no_grad():
        ce = torch.stack([F.cross_entropy(student(x), y) for x, y in batches]).mean().item()
        soft = torch.stack([16 * F.kl_div(F.log_softmax(student(x) / 4, 1), F.log_softmax(teacher(x) / 4, 1),
                                          reduction="batchmean", log_target=True) for x, _ in batches]).mean().item()
    assert result.loss == pytest.approx(ce, rel=1e-5)  # comparable with val_loss
    assert result.distill_loss == pytest.approx(soft, rel=1e-5) and soft > 0


def test_a_distillation_run_writes_the_term_in_its_own_column(trained_run, tmp_path):
    run_dir = tmp_path / "student"
    assert_ok(run_cli("train", *TINY[:-1], "epochs=1", "model.widths=[4,8,8]", f"distill.teacher={trained_run.best}",
                      f"hydra.run.dir={run_dir}", cwd=tmp_path))
    rows = read_csv(run_dir / "metrics.csv")
    assert "distill_loss" in rows[0] and float(rows[0]["distill_loss"]) > 0
    # the task loss sits on val_loss's scale (both cross-entropy with the labels), not T^2 times larger
    assert float(rows[0]["train_loss"]) < 3 * float(rows[0]["val_loss"]) + 0.5


# --- 13: a resume that cannot carry over; seed bounds ---------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run, trained in-process (its last.pt resumable with more epochs)."""
    from imgcls_cli.engine.train import run_training

    run_dir = tmp_path_factory.mktemp("resume") / "run"
    run_training(train_spec(*TINY[:-1], "epochs=1", "dataset.num_samples=200"), run_dir)
    return run_dir


@pytest.mark.parametrize("change, shown", [
    ("optimizer=sgd", "optimizer.name adam -> sgd"),
    ("model.widths=[4,8,8]", "model.widths [8, 16, 16] -> [4, 8, 8]"),
    ("dataset.num_samples=300", "dataset.num_samples 200 -> 300"),
])
def test_a_resume_that_cannot_carry_over_is_refused_before_anything_is_written(finished_run, change, shown):
    from imgcls_cli.engine.resume import ResumeRefused
    from imgcls_cli.engine.train import run_training

    files = {p: file_digest(p) for p in finished_run.rglob("*") if p.is_file()}
    cfg = train_spec(*TINY[:-1], "epochs=2", "dataset.num_samples=200", change, f"resume={finished_run}")
    with pytest.raises(ResumeRefused) as refused:
        run_training(cfg, finished_run)
    message = str(refused.value)
    assert "\n" not in message and shown in message and "cannot carry over" in message
    assert {p: file_digest(p) for p in finished_run.rglob("*") if p.is_file()} == files


def test_a_resume_with_more_epochs_still_continues(finished_run, tmp_path):
    import shutil

    from imgcls_cli.engine.train import run_training

    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run, run_dir)
    summary = run_training(train_spec(*TINY[:-1], "epochs=2", "dataset.num_samples=200", f"resume={run_dir}",
                                         "optimizer.lr=0.002"), run_dir)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2


def test_out_of_range_seeds_are_one_line(tmp_path):
    runs = run_in_one_process({s: (["train", f"seed={s}", "epochs=1"], tmp_path)
                               for s in ("99999999999999999999", "4294967296")})
    for seed, result in runs.items():
        assert_user_error(result, "seed", "4294967295", seed)
