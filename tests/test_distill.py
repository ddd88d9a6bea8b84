"""Knowledge distillation: the loss against its formula, the teacher's input conversion, and runs through the CLI."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY, assert_ok, assert_user_error, read_json, run_cli, run_in_one_process
from imgcls_cli.engine.distill import Teacher, distillation_loss
from imgcls_cli.specs.transfer import DistillSpec
from imgcls_cli.errors import UserError


def test_distillation_loss_is_the_formula_with_the_t_squared_factor():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    T, alpha = 4.0, 0.7
    hard = F.cross_entropy(s, y)
    p_t, p_s = torch.softmax(t / T, 1), torch.softmax(s / T, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()  # KL(teacher || student), per sample, averaged
    expected = alpha * T * T * kl + (1 - alpha) * hard
    assert distillation_loss(s, t, hard, T, alpha).item() == pytest.approx(expected.item(), rel=1e-5)
    assert distillation_loss(s, t, hard, T, 0.0).item() == pytest.approx(hard.item())
    assert distillation_loss(t, t, hard, T, 1.0).item() == pytest.approx(0.0, abs=1e-6)  # agreeing: no soft loss


class Probe(nn.Module):
    """Logits = the per-channel mean of the input and its side length: shows what the teacher was given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), torch.full((len(x), 1), float(x.shape[-1]))], 1)


def test_teacher_gets_its_own_size_and_normalization():
    raw = torch.rand(2, 3, 16, 16)
    student = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "size": 16, "channels": 3}
    teacher = {"mean": [0.1, 0.1, 0.1], "std": [0.5, 0.5, 0.5], "size": 32, "channels": 3}
    x = (raw - torch.tensor(student["mean"]).view(1, -1, 1, 1)) / 0.2
    out = Teacher(Probe(), student, teacher, torch.device("cpu"))(x, torch.no_grad)
    expected = (F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False) - 0.1) / 0.5
    assert torch.allclose(out[:, :3], expected.mean((2, 3)), atol=1e-5) and (out[:, 3] == 32).all()


def test_bad_distill_settings_are_user_errors():
    with pytest.raises(UserError, match="distill.alpha"):
        DistillSpec.parse({"teacher": "t.pt", "alpha": 1.5})
    with pytest.raises(UserError, match="distill.temperature"):
        DistillSpec.parse({"teacher": "t.pt", "temperature": 0})


def test_distill_through_the_cli(trained_run, tmp_path):
    runs = run_in_one_process({
        "student": (["train", *TINY, "model.widths=[4,8,8]", f"distill.teacher={trained_run.best}",
                     f"hydra.run.dir={tmp_path / 'student'}"], tmp_path),
        "other_classes": (["train", "dataset=digits", "epochs=1", f"distill.teacher={trained_run.best}"], tmp_path),
    })
    assert_ok(runs["student"])
    assert "distilling from" in runs["student"].stdout
    summary = read_json(tmp_path / "student" / "summary.json")
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.3
    assert_user_error(runs["other_classes"], "distill.teacher", "classes")
