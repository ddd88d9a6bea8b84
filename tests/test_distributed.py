"""Data-parallel training through the CLI: `imgcls train distributed.nproc=2` starts two gloo processes on the CPU
(torch.distributed's elastic launcher, as torchrun does); rank 0 alone writes the run directory.

Two processes of batch 32 take, step by step, the very images one process of batch 64 takes (rank r trains on
every second image of the epoch's order from r on), so for a model without batch norm and without random
augmentation they end with the same weights and the same all-reduced metrics.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import (assert_ok, assert_user_error, cli_env, files_under, read_csv, read_json, run_cli,
                      run_in_one_process, wait_for_mid_epoch_checkpoint)
from imgcls_cli.data.loader import DeviceLoader
from imgcls_cli.engine.distributed import Dist, nproc_from, prepare
from imgcls_cli.errors import UserError
from imgcls_cli.optim import build_optimizer
from imgcls_cli.specs.optimizer import OptimizerSpec

SAME = ["model=lenet5", "precision=fp32", "augment=none", "epochs=2"]  # no batch norm, no random augmentation
AUGMENTED = ["dataset.max_train_samples=800", "augment=mixup", "epochs=3", "checkpoint.every_n_steps=3",
             "precision=fp32"]


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["state_dict"]


def scratch_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("imgcls-rank*")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("ddp")
    before = scratch_folders()
    single = run_cli("train", *SAME, "batch_size=64", f"hydra.run.dir={base / 'single'}", cwd=base)
    ddp = run_cli("train", *SAME, "batch_size=32", "distributed.nproc=2", cwd=base / "two")
    torchrun = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "imgcls_cli", "train", *SAME, "batch_size=32", "hydra.run.dir=torchrun"],
                              cwd=base, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert_ok(single)
    assert_ok(ddp)
    assert torchrun.returncode == 0, torchrun.stderr
    return {"single": single, "ddp": ddp, "torchrun": base / "torchrun", "scratch": scratch_folders() - before}


def test_two_processes_of_32_end_where_one_process_of_64_does(runs):
    single, ddp = runs["single"].run_dir, runs["ddp"].run_dir
    ours, reference = last_weights(ddp), last_weights(single)
    assert ours.keys() == reference.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-4, atol=1e-5, msg=key)
    columns = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    for a, b in zip(read_csv(ddp / "metrics.csv"), read_csv(single / "metrics.csv"), strict=True):
        assert [float(a[c]) for c in columns] == pytest.approx([float(b[c]) for c in columns], abs=1e-4)
    summary = read_json(ddp / "summary.json")
    assert summary["status"] == "completed" and summary["distributed"]["world_size"] == 2
    assert summary["test_accuracy"] == pytest.approx(read_json(single / "summary.json")["test_accuracy"], abs=0.01)


def test_torchrun_itself_trains_the_same_run(runs):
    ours, shortcut = last_weights(runs["torchrun"]), last_weights(runs["ddp"].run_dir)
    assert all(torch.equal(ours[k], shortcut[k]) for k in shortcut)
    assert files_under(runs["torchrun"]) == files_under(runs["ddp"].run_dir)


def test_rank_0_alone_writes_the_run_directory_once_and_whole(runs):
    result = runs["ddp"]
    run_dir = result.run_dir
    assert [p.name for p in (result.cwd / "outputs" / "train").iterdir()] == [run_dir.name]  # one run, one folder
    assert files_under(run_dir) == files_under(runs["single"].run_dir)  # what a single process writes, no more
    assert runs["scratch"] == set()  # the other rank's scratch Hydra folder is gone
    assert sum(line.startswith("Run directory:") for line in result.stdout_lines) == 1
    assert result.stdout.count("Results") == 1
    log = (run_dir / "train.log").read_text()
    assert log.count("epoch 1/2") == 1 and log.count("epoch 2/2") == 1
    assert "data-parallel training: 2 processes (gloo), 32 images per process a step, 64 in all" in log
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["distributed"] == {"world_size": 2}


def test_resume_in_another_number_of_processes_is_one_line(runs, tmp_path):
    single = runs["single"].run_dir
    result = run_cli("train", *SAME, "batch_size=32", "distributed.nproc=2", "epochs=3", f"resume={single}",
                     "overwrite=true", cwd=tmp_path)  # overwrite=true: a completed run may be continued
    assert_user_error(result, "trained in 1 process", "not 2")
    assert read_json(single / "summary.json")["status"] == "completed"  # the finished run is left as it was


def test_sigterm_mid_epoch_then_resume_in_two_processes_gives_bitwise_equal_weights(tmp_path):
    reference = run_cli("train", *AUGMENTED, "distributed.nproc=2", "hydra.run.dir=whole", cwd=tmp_path)
    assert_ok(reference)
    run_dir = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "imgcls_cli", "train", *AUGMENTED, "distributed.nproc=2",
                             f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert wait_for_mid_epoch_checkpoint(run_dir / "checkpoints" / "last.pt", proc).get("ranks")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr.decode()
    assert "Traceback" not in stderr.decode() and f"resume={run_dir}" in stderr.decode()
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert read_json(run_dir / "summary.json")["status"] == "interrupted"
    assert len(last["ranks"]) == 2 and last["epoch"] < 3
    resumed = run_cli("train", *AUGMENTED, "distributed.nproc=2", f"resume={run_dir}", cwd=tmp_path)
    assert_ok(resumed)
    ours, whole = last_weights(run_dir), last_weights(tmp_path / "whole")
    assert all(torch.equal(ours[k], whole[k]) for k in whole)
    assert read_csv(run_dir / "metrics.csv") and [r["val_accuracy"] for r in read_csv(run_dir / "metrics.csv")] == \
        [r["val_accuracy"] for r in read_csv(tmp_path / "whole" / "metrics.csv")]


def test_what_data_parallel_training_refuses_is_one_line(tmp_path):
    sync_bn = run_cli("train", "distributed.nproc=2", "distributed.sync_bn=true", "epochs=1", cwd=tmp_path / "a")
    assert_user_error(sync_bn, "sync_bn", "CUDA")
    assert not (tmp_path / "a" / "outputs" / "train").exists() or all(
        read_json(p / "summary.json")["status"] == "failed" for p in (tmp_path / "a" / "outputs" / "train").iterdir())
    # Refused by the command line before any process starts: cli.main in one child process (the same exit status
    # and stderr as typed).
    refused = run_in_one_process({"sweep": (["train", "distributed.nproc=2", "-m", "seed=0,1"], tmp_path),
                                  "nproc": (["train", "distributed.nproc=two"], tmp_path)})
    assert_user_error(refused["sweep"], "-m")
    assert_user_error(refused["nproc"], "distributed.nproc")


# ------------------------------------------------------------------------------------------ the parts, in-process
def test_each_rank_takes_every_world_th_image_and_together_they_take_the_epoch_once():
    images, labels = torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10)
    whole = DeviceLoader(images, labels, 4, [0.0], [1.0], shuffle=True, seed=3)
    ranks = [DeviceLoader(images, labels, 2, [0.0], [1.0], shuffle=True, seed=3, shard=(r, 2), pad_shards=False)
             for r in range(2)]
    for loader in (whole, *ranks):
        loader.set_epoch(1)
    order = torch.cat([y for _, y in whole])
    taken = [torch.cat([y for _, y in loader]) for loader in ranks]
    assert torch.equal(taken[0], order[0::2]) and torch.equal(taken[1], order[1::2])
    # 9 images in 2 ranks: 5 each, the first image of the epoch's order taken twice (as DistributedSampler pads)
    padded = [DeviceLoader(images[:9], labels[:9], 2, [0.0], [1.0], shuffle=True, seed=3, shard=(r, 2),
                           pad_shards=True) for r in range(2)]
    assert [p.samples() for p in padded] == [5, 5] and [len(p) for p in padded] == [3, 3]
    for p in padded:
        p.set_epoch(1)
    taken = torch.cat([torch.cat([y for _, y in p]) for p in padded])
    assert len(taken) == 10 and set(taken.tolist()) == set(range(9))
    assert torch.bincount(taken).max() == 2 and torch.bincount(taken).argmax() == next(iter(padded[0]))[1][0]


def test_lr_scales_with_the_world_size_only_when_asked():
    model = nn.Linear(2, 2)
    lr = lambda cfg, world: build_optimizer(model, OptimizerSpec.parse({"name": "sgd", "lr": 0.1, **cfg}),  # noqa: E731
                                            64, world_size=world).param_groups[0]["lr"]
    assert lr({}, 4) == pytest.approx(0.1)
    assert lr({"scale_lr_with_world_size": True}, 4) == pytest.approx(0.4)
    assert lr({"scale_lr_with_world_size": True, "base_lr": 0.1}, 2) == pytest.approx(0.1 * 64 / 256 * 2)
    with pytest.raises(UserError, match="scale_lr_with_world_size"):
        lr({"scale_lr_with_world_size": "yes"}, 2)


def test_sync_bn_converts_batch_norm_in_data_parallel_training_only():
    make = lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())  # noqa: E731
    converted = prepare(make(), Dist(0, 2), sync_bn=True)
    assert isinstance(converted[1], nn.SyncBatchNorm)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in prepare(make(), Dist(), sync_bn=True).modules())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in prepare(make(), Dist(0, 2), sync_bn=False).modules())


def test_nproc_is_read_from_the_command_line():
    assert nproc_from(["epochs=1"]) == 1 and nproc_from(["distributed.nproc=4", "seed=1"]) == 4
    with pytest.raises(UserError, match="distributed.nproc"):
        nproc_from(["distributed.nproc=0"])
