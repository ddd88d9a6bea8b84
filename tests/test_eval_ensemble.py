"""eval of several checkpoints and their ensemble, of a whole sweep, and with test-time augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_ok, assert_user_error, read_csv, read_json, run_in_one_process
from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.engine.ensemble import Scored, combine
from imgcls_cli.engine.predictor import predict
from imgcls_cli.specs.eval import checkpoint_paths
from imgcls_cli.errors import UserError


def scored(probs) -> Scored:
    probs = np.asarray(probs, dtype=np.float64)
    return Scored("x.pt", {}, probs, np.zeros(len(probs), int), [], "index", "")


def test_averaging_is_the_mean_softmax():
    a, b = [[0.6, 0.4], [0.2, 0.8]], [[0.2, 0.8], [0.4, 0.6]]
    assert np.allclose(combine([scored(a), scored(b)], "averaging"), [[0.4, 0.6], [0.3, 0.7]])


def test_voting_takes_the_majority_and_breaks_ties_by_the_mean_probability():
    members = [scored([[0.9, 0.1, 0.0], [0.5, 0.4, 0.1]]),
               scored([[0.6, 0.4, 0.0], [0.1, 0.8, 0.1]]),
               scored([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])]
    out = combine(members, "voting")
    assert out.argmax(1).tolist() == [0, 1]  # row 0: two votes for class 0; row 1: one vote each, class 1 has
    assert out[0] == pytest.approx([2 / 3, 0, 1 / 3], abs=1e-6)  # the highest mean probability (0.5 vs 0.3, 0.2)
    assert np.allclose(out.sum(1), 1.0)
    with pytest.raises(UserError, match="ensemble must be averaging or voting"):
        combine(members, "stacking")


class Halves(nn.Module):
    """Logits from the left and right halves of the image: a model that a horizontal flip changes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], dim=1) * 5


def test_tta_averages_the_softmax_of_the_views():
    x = torch.rand(4, 1, 8, 8)
    loader = [(x, torch.zeros(4, dtype=torch.long))]
    plain = predict(Halves(), loader, torch.no_grad, tta="none").outputs
    flipped = predict(Halves(), [(x.flip(-1), loader[0][1])], torch.no_grad, tta="none").outputs
    both = predict(Halves(), loader, torch.no_grad, tta="hflip").outputs
    assert torch.allclose(both, (plain + flipped) / 2) and not torch.allclose(both, plain)
    four = predict(Halves(), loader, torch.no_grad, tta="hflip_shift").outputs
    assert four.shape == (4, 2) and torch.allclose(four.sum(1), torch.ones(4))


def test_checkpoint_paths_take_a_path_a_list_or_a_glob(tmp_path):
    for name in ("b.pt", "a.pt"):
        (tmp_path / name).write_bytes(b"")
    assert checkpoint_paths(str(tmp_path / "*.pt")) == (str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    assert checkpoint_paths(["x.pt", "y.pt"]) == ("x.pt", "y.pt")
    with pytest.raises(UserError, match="matches no file"):
        checkpoint_paths(str(tmp_path / "*.pth"))


@pytest.fixture(scope="module")
def ensemble_runs(sweep_run, trained_run, tmp_path_factory):
    assert_ok(sweep_run)
    base = tmp_path_factory.mktemp("ensemble")
    other = load_checkpoint(trained_run.best)
    other["classes"] = [f"other{i}" for i in range(len(other["classes"]))]
    save_checkpoint({k: v for k, v in other.items() if k not in ("format", "format_version")}, base / "other.pt")
    glob = f"checkpoint={sweep_run.run_dir}/*/checkpoints/best.pt"
    return base, run_in_one_process({  # evals start no other process: one start-up for the four
        "averaging": (["eval", glob, f"hydra.run.dir={base / 'avg'}"], base),
        "voting": (["eval", glob, "ensemble=voting", "tta=hflip", f"hydra.run.dir={base / 'vote'}"], base),
        "sweep": (["eval", f"sweep={sweep_run.run_dir}", f"hydra.run.dir={base / 'board'}"], base),
        "mismatch": (["eval", f"checkpoint=[{trained_run.best},{base / 'other.pt'}]"], base),
    })


def test_eval_of_a_glob_writes_each_member_and_the_ensemble(ensemble_runs):
    base, runs = ensemble_runs
    for name, folder in (("averaging", "avg"), ("voting", "vote")):
        assert_ok(runs[name])
        rows = read_csv(base / folder / "members.csv")
        assert [r["member"] for r in rows] == ["0", "1", f"ensemble ({name})"]
        for i in (0, 1):
            member = read_json(base / folder / "members" / str(i) / "metrics.json")
            assert float(rows[i]["accuracy"]) == pytest.approx(member["accuracy"])
        ensemble = read_json(base / folder / "metrics.json")
        assert ensemble["ensemble"] == name and len(ensemble["members"]) == 2
        assert 0 <= ensemble["accuracy"] <= 1 and len(read_csv(base / folder / "predictions.csv")) == 120
    assert read_json(base / "vote" / "metrics.json")["tta"] == "hflip"


def test_eval_of_a_sweep_writes_a_leaderboard_best_first(ensemble_runs, sweep_run):
    base, runs = ensemble_runs
    assert_ok(runs["sweep"])
    board = read_csv(base / "board" / "leaderboard.csv")
    assert sorted(r["job"] for r in board) == ["0", "1"]
    accuracies = [float(r["accuracy"]) for r in board]
    assert accuracies == sorted(accuracies, reverse=True)
    for row in board:  # the same numbers as the training run's own test evaluation
        job = next(p for p in sweep_run.run_dir.iterdir() if p.name.startswith(row["job"] + "_"))
        assert float(row["accuracy"]) == pytest.approx(read_json(job / "eval" / "metrics.json")["accuracy"])


def test_ensemble_members_with_other_classes_are_one_line(ensemble_runs):
    _, runs = ensemble_runs
    assert_user_error(runs["mismatch"], "ensemble members differ in classes")
