"""task=multilabel's pieces in the engine, in-process: the task (accuracy, loss, mAP), MixUp/CutMix of multi-hot
targets, sigmoid distillation, label-set prediction rows, the checkpoint's thresholds, the task spec, a sweep's
summary columns."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.commands.sweep import collect, columns_of
from imgcls_cli.data.mix import Mixer
from imgcls_cli.engine.distill import distillation_terms, sigmoid_soft_loss
from imgcls_cli.engine.labelsets import prediction_rows
from imgcls_cli.errors import UserError
from imgcls_cli.specs.task import TaskSpec
from imgcls_cli.tasks import Multiclass, Multilabel, task_of


def test_the_multilabel_task_counts_whole_sets_and_scores_map():
    task = task_of("multilabel")
    logits = torch.tensor([[2.0, -1.0, 3.0], [-2.0, 1.0, -1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert task.correct(logits, y).item() == 2  # the second image misses its third label
    expected = F.binary_cross_entropy_with_logits(logits.double(), y.double(), reduction="mean").item() * 3
    assert task.loss_sum(logits, y) == pytest.approx(expected)
    from sklearn.metrics import average_precision_score

    scores = torch.sigmoid(logits).numpy()
    by_hand = np.mean([average_precision_score(y[:, j], scores[:, j]) for j in range(3)])
    assert task.scores(logits, y)["map"] == pytest.approx(by_hand)
    assert isinstance(task_of(None), Multiclass) and isinstance(task, Multilabel)


def test_mixing_multi_hot_targets_mixes_the_two_sets_by_lambda_and_cutmix_by_area():
    x = torch.rand(4, 1, 10, 10)
    y = torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0], [0, 0, 0], [1.0, 1.0, 0]])
    for mixer in (Mixer(1.0, 0.0, 1.0, 0.5, 3), Mixer(0.0, 1.0, 1.0, 0.5, 3)):
        mixed, targets = mixer(x, y, torch.Generator().manual_seed(3))
        lam = 1 - targets[0, 1].item()  # image 0 has label 0 alone, its partner (image 3) labels 0 and 1
        assert 0 < lam < 1
        assert torch.allclose(targets, lam * y + (1 - lam) * y.flip(0))
        if mixer.cutmix_alpha:  # the pasted area is exactly 1 - lambda of the image
            pasted = (mixed[0] != x[0]).float().mean().item()
            assert pasted == pytest.approx(1 - lam, abs=0.02)


def test_sigmoid_distillation_is_zero_when_student_and_teacher_agree():
    teacher = torch.randn(8, 5)
    assert sigmoid_soft_loss(teacher.clone(), teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(8, 5, requires_grad=True)
    soft = sigmoid_soft_loss(student, teacher, 2.0)
    assert soft.item() > 0
    soft.backward()
    assert torch.isfinite(student.grad).all()
    total, term = distillation_terms(student, teacher, torch.tensor(1.0), 2.0, 0.7, "multilabel")
    assert total.item() == pytest.approx(0.7 * term.item() + 0.3)


def test_prediction_rows_hold_the_labels_at_or_above_their_thresholds():
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.1, 0.1]])
    rows, columns = prediction_rows(probs, ["a", "b", "c"], [0.5, 0.1, 0.7], ["x.png", "y.png", "z.png"], "path",
                                    2, targets=np.array([[1, 1, 0], [0, 0, 0]]), errors=["", "broken", ""])
    assert columns == ["path", "label", "probability", "top1_label", "top1_probability", "top2_label",
                       "top2_probability", "target", "error"]
    assert rows[0]["label"] == "a|b" and rows[0]["probability"] == "0.900000|0.200000"
    assert (rows[0]["top1_label"], rows[0]["top2_label"]) == ("a", "c") and rows[0]["target"] == "a|b"
    assert rows[1] == {"path": "y.png", "error": "broken"}
    assert rows[2]["label"] == "b" and rows[2]["target"] == ""


def test_a_checkpoint_with_bad_thresholds_is_refused_in_one_line(tmp_path):
    from imgcls_cli.models import create_model

    model = create_model("simple_cnn", num_classes=3, in_channels=1, image_size=16)
    ckpt = {"format": "imgcls-checkpoint", "format_version": 1, "state_dict": model.state_dict(),
            "model": {"name": "simple_cnn", "kwargs": {"num_classes": 3, "in_channels": 1, "image_size": 16}},
            "classes": ["a", "b", "c"], "input": {"channels": 1, "size": 16, "mean": [0.5], "std": [0.2]},
            "config": {"dataset": {"name": "csv"}}, "task": "multilabel", "thresholds": [0.5, 0.5, 0.5]}
    save_checkpoint(ckpt, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["thresholds"] == [0.5, 0.5, 0.5]
    for bad in ([0.5, 0.5], [0.5, 1.5, 0.5], None, "0.5"):
        save_checkpoint({**ckpt, "thresholds": bad}, tmp_path / "bad.pt")
        with pytest.raises(UserError, match="thresholds must list 3 probabilities"):
            load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("cfg,message", [
    ({"task": "multiclass", "loss": {"name": "asl"}}, "loss=asl does not apply to task=multiclass"),
    ({"task": "multilabel", "loss": {"name": "ce"}}, "loss=ce does not apply to task=multilabel"),
    ({"task": "multilabel", "loss": {"name": "asl", "clip": 1.0}}, "loss.clip must be in [0, 1)"),
    ({"task": "multilabel", "threshold": [0.5, 0]}, "threshold must be a probability in (0, 1)"),
    ({"task": "multiclass", "threshold": 0.4}, "threshold applies to task=multilabel"),
    ({"task": "multi"}, "unknown task 'multi'. Did you mean multilabel, multiclass?"),
])
def test_task_settings_are_checked_in_one_place(cfg, message):
    with pytest.raises(UserError) as info:
        TaskSpec.parse(cfg)
    assert message in str(info.value)


def test_task_spec_resolves_the_loss_and_keeps_thresholds():
    spec = TaskSpec.parse({"task": "multilabel", "loss": {"name": "auto"}, "threshold": [0.3, 0.6]})
    assert (spec.loss, spec.threshold, spec.multilabel) == ("bce", (0.3, 0.6), True)
    assert TaskSpec.parse({}).loss == "ce"


def test_a_multilabel_sweep_summary_adds_the_map_columns(tmp_path):
    for job, summary in enumerate([{"status": "completed", "best_val_accuracy": 0.5, "test_accuracy": 0.4,
                                    "wall_seconds": 3, "best_val_map": 0.9, "test_map": 0.88},
                                   {"status": "failed"}]):
        folder = tmp_path / f"{job}_seed-{job}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
        (folder / "summary.json").write_text(json.dumps(summary))
    rows = collect(tmp_path)
    assert columns_of(rows) == ("job", "overrides", "status", "best_val_accuracy", "test_accuracy", "best_val_map",
                                "test_map", "wall_seconds")
    assert rows[0]["test_map"] == 0.88 and "test_map" not in rows[1]
    assert columns_of([{"test_accuracy": 0.9}])[-3:] == ("best_val_accuracy", "test_accuracy", "wall_seconds")
