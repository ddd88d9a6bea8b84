"""Training techniques beyond the step: EMA of the weights, early stopping, validation every N epochs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY, TINY_EPOCHS, assert_ok, assert_user_error, read_csv, read_json, run_cli, run_in_one_process
from imgcls_cli.engine.ema import EMA, build_ema
from imgcls_cli.engine.state import EarlyStopping
from imgcls_cli.errors import UserError
from imgcls_cli.specs.loop import EarlyStoppingSpec, EmaSpec


def test_ema_update_is_the_moving_average_formula():
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=False)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight)


def test_ema_warmup_starts_with_a_small_decay():
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.999, warmup=True)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # d = min(0.999, 2 / 11)
    d = 2 / 11
    assert torch.allclose(ema.module.weight, d * (model.weight - 1.0) + (1 - d) * model.weight, atol=1e-6)


def test_no_ema_without_a_decay_and_a_bad_decay_is_a_user_error():
    assert build_ema(nn.Linear(1, 1), EmaSpec.parse({"decay": None})) is None
    assert build_ema(nn.Linear(1, 1), EmaSpec.parse({"decay": 0.9, "warmup": False})).decay == 0.9
    with pytest.raises(UserError, match="ema.decay"):
        EmaSpec.parse({"decay": 1.5})


def test_early_stopping_counts_validations_without_improvement():
    stopper = EarlyStopping.from_spec(EarlyStoppingSpec.parse({"patience": 2, "metric": "val_loss"}), has_val=True)
    assert stopper.mode == "min" and stopper.better(0.4, 0.5)
    for improved, stops in ((True, False), (False, False), (False, True)):
        stopper.count(improved)
        assert stopper.stop() == stops
    with pytest.raises(UserError, match="validation split"):
        EarlyStopping.from_spec(EarlyStoppingSpec.parse({"patience": 2}), has_val=False)


def test_ema_copies_the_model_without_the_hooks_of_other_features():
    """ema.decay with domain.target: the adversary's hook on the head holds its target batches (a generator, which
    cannot be copied); the EMA is made without it, never feeds it, and the live model keeps it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    seen = []
    batches = (torch.zeros(2, 4) for _ in range(3))
    model[1].register_forward_hook(lambda module, args, out, batches=batches: seen.append(args[0]))
    ema = EMA(model, 0.9)
    ema.module(torch.ones(2, 4))
    assert seen == []
    model(torch.ones(2, 4))
    assert len(seen) == 1


def test_early_stopping_ema_and_val_every_through_the_cli(tmp_path):
    """An lr too small to learn: val accuracy never improves after epoch 1, so patience 1 stops at epoch 2. Both runs
    through cli.main in one child process (conftest.run_in_one_process: the same exit status and output)."""
    run_dir = tmp_path / "run"
    results = run_in_one_process({
        "stopped": (["train", *[a for a in TINY if not a.startswith("epochs=")], "epochs=6", "optimizer.lr=1e-12",
                     "early_stopping.patience=1", "ema.decay=0.9", f"hydra.run.dir={run_dir}"], tmp_path),
        "sparse": (["train", *TINY, "val_every=3", "tensorboard=true", f"hydra.run.dir={tmp_path / 'sparse'}"],
                   tmp_path),
        "no_val": (["train", *TINY, "dataset.val_fraction=0.0", "ema.decay=0.9", f"hydra.run.dir={tmp_path / 'nv'}"],
                   tmp_path),
    })
    result = results["stopped"]
    assert_ok(result)
    assert result.run_dir == run_dir
    rows = read_csv(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and "early stopping" in result.stdout
    assert rows[0]["ema_val_accuracy"] != "" and (run_dir / "checkpoints" / "best_ema.pt").is_file()
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["early_stopped"] and summary["best_epoch"] == 1
    assert_ok(results["sparse"])
    rows = read_csv(tmp_path / "sparse" / "metrics.csv")
    assert [r["epoch"] for r in rows if r["val_accuracy"]] == ["3", "4"]  # every third epoch, and the last
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "sparse" / "tensorboard"))
    events.Reload()
    losses = [e.value for e in events.Scalars("train_loss")]
    assert losses == pytest.approx([float(r["train_loss"]) for r in rows], rel=1e-5)
    assert [e.step for e in events.Scalars("val_accuracy")] == [3, 4]
    # No validation split: best_ema.pt still holds the averaged weights, the last epoch's (not a silent no-op).
    assert_ok(results["no_val"])
    checkpoints = tmp_path / "nv" / "checkpoints"
    ema = torch.load(checkpoints / "best_ema.pt", weights_only=True)
    last = torch.load(checkpoints / "last.pt", weights_only=True)
    assert ema["epoch"] == TINY_EPOCHS == last["epoch"]
    assert ema["state_dict"].keys() == last["ema"]["state_dict"].keys()
    # the same averaged weights; batch-norm statistics are recomputed for them (bn_recalibrate), as for best.pt
    weights = [k for k in ema["state_dict"] if "running_" not in k and "num_batches" not in k]
    assert weights and all(torch.equal(ema["state_dict"][k], last["ema"]["state_dict"][k]) for k in weights)
    model = torch.load(checkpoints / "best.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(v, model[k]) for k, v in ema["state_dict"].items())


def test_compile_trains_and_saves_plain_checkpoints(tmp_path):
    """compile=true: torch.compile for the steps; checkpoints keep the model's own parameter names, so eval loads
    them without compiling."""
    run_dir = tmp_path / "run"
    # One full batch each for training, validation and test: each graph compiles once (a partial last batch or
    # another precision would compile it again: minutes of inductor's C++ compilation on 2 cores).
    result = run_cli("train", "compile=true", "model=lenet5", "epochs=1", "dataset.max_train_samples=64",
                     "dataset.max_eval_samples=64", "batch_size=64", "eval_batch_size=64", "precision=fp32",
                     f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_ok(result)
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in best["state_dict"])
    evaluated = run_cli("eval", f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}",
                        f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert_ok(evaluated)
    assert read_json(tmp_path / "eval" / "metrics.json")["accuracy"] == pytest.approx(
        read_json(run_dir / "eval" / "metrics.json")["accuracy"])


def test_loss_is_cross_entropy_against_smoothed_soft_targets():
    from imgcls_cli.engine.build import build_loss

    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 3, 3, 1])
    a, k = 0.1, 5
    smoothed = torch.nn.functional.one_hot(targets, k).float() * (1 - a) + a / k
    by_formula = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    assert build_loss(None, a)(logits, targets).item() == pytest.approx(by_formula.item(), rel=1e-6)
    soft = torch.softmax(torch.randn(4, 5), 1)  # MixUp/CutMix targets
    by_formula = -(((soft * (1 - a)) + a / k) * logits.log_softmax(1)).sum(1).mean()
    assert build_loss(None, a)(logits, soft).item() == pytest.approx(by_formula.item(), rel=1e-6)
    w = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0])
    per_sample = -(torch.nn.functional.one_hot(targets, k) * logits.log_softmax(1)).sum(1) * w[targets]
    assert build_loss(w, 0.0)(logits, targets).item() == pytest.approx((per_sample.sum() / w[targets].sum()).item(),
                                                                         rel=1e-6)


@pytest.mark.parametrize("flags,auto", [({"avx2"}, "fp32"), ({"avx512_bf16", "avx2"}, "bf16"), ({"amx_bf16"}, "bf16")])
def test_precision_auto_on_cpu_follows_the_cpu_flags(monkeypatch, flags, auto):
    from imgcls_cli.engine import device

    assert device.cpu_has_fast_bf16(flags) == (auto == "bf16")
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda flags=None: auto == "bf16")
    cpu = torch.device("cpu")
    assert device.resolve_precision("auto", cpu) == auto
    assert device.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(UserError, match="precision=fp16 is for GPUs"):
        device.resolve_precision("fp16", cpu)
    with pytest.raises(UserError, match="precision must be one of"):
        device.resolve_precision("fp8", cpu)


@pytest.mark.parametrize("flags,model_name,expected", [
    ({"avx512_bf16"}, "efficientnet_b0", "fp32"),  # depthwise convolutions: fp32 is faster there
    ({"avx512_bf16"}, "simple_cnn", "bf16"),
    ({"avx512_bf16", "amx_bf16"}, "efficientnet_b0", "bf16"),  # AMX runs them well in bf16
])
def test_precision_auto_takes_the_model_into_account_on_cpu(flags, model_name, expected):
    from imgcls_cli.engine.device import auto_precision_for_model
    from imgcls_cli.models import create_model

    with torch.device("meta"):
        model = create_model(model_name, num_classes=10, in_channels=3, image_size=32)
    cpu = torch.device("cpu")
    assert auto_precision_for_model("bf16", "auto", cpu, model, flags) == expected
    assert auto_precision_for_model("bf16", "bf16", cpu, model, flags) == "bf16"  # asked for: kept
