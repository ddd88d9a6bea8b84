"""Transfer learning and domain adaptation: init=PATH, finetune.*, eval features=true, domain.* (DANN)."""
from __future__ import annotations

import contextlib
import csv
import math

import numpy as np
import pytest
import torch

from conftest import (TINY, assert_ok, assert_user_error, read_csv, read_json, run_cli, run_in_one_process,
                      write_png)
from imgcls_cli.engine.domain import ramp, reverse_gradient
from imgcls_cli.engine.finetune import EncoderFreezer, l2sp_penalty, load_init, lr_multipliers
from imgcls_cli.engine.fit import train_one_epoch
from imgcls_cli.errors import UserError
from imgcls_cli.models import create_model
from imgcls_cli.models.heads import head_name
from imgcls_cli.optim import build_optimizer
from imgcls_cli.specs.optimizer import OptimizerSpec
from imgcls_cli.specs.transfer import FinetuneSpec

SMALL = {"widths": [4, 8, 8], "hidden": 16}
SMALL_ARGS = ["model.widths=[4,8,8]", "model.hidden=16"]


def small_cnn(num_classes: int, channels: int = 1, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("simple_cnn", num_classes=num_classes, in_channels=channels, image_size=16, **SMALL)


def checkpoint_of(model: torch.nn.Module, classes: list[str], channels: int, name: str = "simple_cnn") -> dict:
    return {"model": {"name": name, "kwargs": dict(SMALL)}, "state_dict": model.state_dict(), "classes": classes,
            "input": {"channels": channels, "size": 16, "mean": [0.5] * channels, "std": [0.25] * channels}}


CLASSES_10 = [str(i) for i in range(10)]


# ----------------------------------------------------------------------------------------- init=PATH loading
def test_init_loads_the_encoder_and_recreates_the_head_for_other_classes():
    pretrained = small_cnn(10, seed=1)
    model = small_cnn(5, seed=2)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.5.")}
    report = load_init(model, "simple_cnn", checkpoint_of(pretrained, CLASSES_10, 1), "pre.pt", list("abcde"), 1)
    assert report.new == ["head.5.weight", "head.5.bias"] and not report.adapted
    state, source = model.state_dict(), pretrained.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key], source[key]), key
    assert set(report.loaded) | set(report.new) == set(state)  # BN running statistics are loaded too
    for key, value in fresh_head.items():
        assert torch.equal(state[key], value)  # the new head keeps its fresh initialization


def test_init_with_the_same_classes_loads_everything():
    pretrained = small_cnn(10, seed=1)
    model = small_cnn(10, seed=2)
    report = load_init(model, "simple_cnn", checkpoint_of(pretrained, CLASSES_10, 1), "pre.pt", CLASSES_10, 1)
    assert not report.new and len(report.loaded) == len(model.state_dict())
    x = torch.randn(3, 1, 16, 16)
    assert torch.equal(model.eval()(x), pretrained.eval()(x))


def test_init_from_another_class_list_of_the_same_size_recreates_the_head():
    """Fashion-MNIST's 10 classes are not digits' 10 classes: the head must not carry over."""
    pretrained = small_cnn(10, seed=1)
    report = load_init(small_cnn(10, seed=2), "simple_cnn", checkpoint_of(pretrained, [f"c{i}" for i in range(10)], 1),
                       "pre.pt", CLASSES_10, 1)
    assert report.new == ["head.5.weight", "head.5.bias"]


def test_init_adapts_the_first_conv_to_other_input_channels():
    pretrained = small_cnn(10, channels=3, seed=1)
    model = small_cnn(10, channels=1, seed=2)
    report = load_init(model, "simple_cnn", checkpoint_of(pretrained, CLASSES_10, 3), "pre.pt", CLASSES_10, 1)
    assert report.adapted == ["features.0.0.weight"]
    # A gray image gives what its RGB copy (R = G = B) gave before.
    gray = torch.rand(2, 1, 16, 16)
    assert torch.allclose(model.eval()(gray), pretrained.eval()(gray.repeat(1, 3, 1, 1)), atol=1e-5)


def test_init_refuses_another_architecture():
    lenet = create_model("lenet5", num_classes=10, in_channels=1, image_size=32)
    ckpt = {"model": {"name": "lenet5", "kwargs": {}}, "state_dict": lenet.state_dict(), "classes": CLASSES_10,
            "input": {"channels": 1, "size": 32, "mean": [0.5], "std": [0.25]}}
    with pytest.raises(UserError, match="lenet5 checkpoint.*model=simple_cnn"):
        load_init(small_cnn(10), "simple_cnn", ckpt, "lenet.pt", CLASSES_10, 1)
    wider = create_model("simple_cnn", num_classes=10, in_channels=1, image_size=16, widths=[8, 8, 8], hidden=16)
    with pytest.raises(UserError, match=r"another simple_cnn architecture.*model.widths=\[4, 8, 8\]"):
        load_init(wider, "simple_cnn", checkpoint_of(small_cnn(10), CLASSES_10, 1), "pre.pt", CLASSES_10, 1)


def test_the_head_is_the_last_layer_with_one_output_per_class_for_every_family():
    expected = {"simple_cnn": "head.5", "lenet5": "classifier.7", "resnet18": "fc", "vgg11": "classifier.7",
                "densenet_bc_100": "fc", "efficientnet_b0": "fc", "alexnet": "classifier.7"}
    for name, head in expected.items():
        model = create_model(name, num_classes=7, in_channels=1, image_size=32)
        assert head_name(model, 7) == head, name


# ------------------------------------------------------------------------------------------ freezing, LR, L2-SP
def _train_steps(model: torch.nn.Module, steps: int = 3, lr: float = 0.1) -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 16, 16, generator=gen) * 2 + 1, torch.randint(0, 5, (8,), generator=gen))
               for _ in range(steps)]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    train_one_epoch(model, batches, optimizer, scheduler, torch.nn.CrossEntropyLoss(), contextlib.nullcontext)


def test_freeze_keeps_encoder_weights_and_batch_norm_statistics_and_unfreeze_releases_them():
    model = small_cnn(5)
    freezer = EncoderFreezer(model, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    freezer.freeze()
    _train_steps(model)
    after = model.state_dict()
    encoder = [k for k in before if not k.startswith("head.5.")]
    assert any(k.endswith("running_mean") for k in encoder)
    for key in encoder:
        assert torch.equal(before[key], after[key]), f"{key} changed while frozen"
    assert not torch.equal(before["head.5.weight"], after["head.5.weight"])  # the classifier trains
    freezer.unfreeze()
    _train_steps(model)
    assert not torch.equal(before["features.0.0.weight"], model.state_dict()["features.0.0.weight"])
    assert not torch.equal(before["features.0.1.running_mean"], model.state_dict()["features.0.1.running_mean"])


def test_l2sp_gradient_is_two_lambda_times_the_distance_to_the_pretrained_weights():
    model = small_cnn(5)
    lam = 0.05
    penalty = l2sp_penalty(model, 5, lam)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert penalty().item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    expected = sum(((p.detach() - start[n]) ** 2).sum() for n, p in model.named_parameters()
                   if not n.startswith("head.5."))
    value = penalty()
    assert value.item() == pytest.approx(lam * expected.item(), rel=1e-5)
    value.backward()
    for name, p in model.named_parameters():
        if name.startswith("head.5."):
            assert p.grad is None  # the new classifier is not pulled anywhere
        else:
            assert torch.allclose(p.grad, 2 * lam * (p.detach() - start[name]), atol=1e-7), name


def test_encoder_lr_mult_gives_the_encoder_a_smaller_learning_rate():
    model = small_cnn(5)
    options = FinetuneSpec.parse({"encoder_lr_mult": 0.1})
    optimizer = build_optimizer(model, OptimizerSpec.parse({"name": "adam", "lr": 0.01, "weight_decay": 0.0}), 64,
                                lr_multipliers(model, 5, options))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert lr_of[id(p)] == pytest.approx(0.01 if name.startswith("head.5.") else 0.001), name
    assert optimizer.param_groups[0]["lr"] == 0.01  # the run's reported lr is the head's


def test_bad_finetune_settings_are_user_errors():
    for cfg, key in (({"freeze": "all"}, "finetune.freeze"), ({"l2sp": -1}, "finetune.l2sp"),
                     ({"encoder_lr_mult": -0.1}, "finetune.encoder_lr_mult"),
                     ({"unfreeze_epoch": 2}, "finetune.unfreeze_epoch")):
        with pytest.raises(UserError, match=key):
            FinetuneSpec.parse(cfg)


# ------------------------------------------------------------------------------------------------------- DANN
def test_gradient_reversal_multiplies_gradients_by_minus_lambda():
    x = torch.randn(4, 6, requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    upstream = torch.randn(4, 6)
    y.backward(upstream)
    assert torch.allclose(x.grad, -0.3 * upstream)


def test_lambda_ramp_is_the_dann_schedule():
    assert ramp(0.0) == 0.0
    assert ramp(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert ramp(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    values = [ramp(p / 10) for p in range(11)]
    assert values == sorted(values) and values[-1] < 1


# ---------------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def pretrained(trained_run):
    """A tiny simple_cnn on 3-channel synthetic images (conftest's session run, `imgcls train <TINY>`): the model
    the CLI runs fine-tune from."""
    return trained_run.best


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_finetune_modes_through_the_cli(pretrained, tmp_path):
    digits = ["dataset=digits", "dataset.max_train_samples=100", "dataset.max_eval_samples=100", "epochs=2",
              "model.widths=[8,16,16]", "model.hidden=32", f"init={pretrained}"]
    runs = run_in_one_process({
        "l2sp": (["train", *digits, "finetune.l2sp=0.01", "finetune.encoder_lr_mult=0.1",
                  f"hydra.run.dir={tmp_path / 'l2sp'}"], tmp_path),
        "frozen": (["train", *digits, "finetune.freeze=encoder", f"hydra.run.dir={tmp_path / 'frozen'}"], tmp_path),
        "unfrozen": (["train", *digits, "finetune.freeze=encoder", "finetune.unfreeze_epoch=2",
                      f"hydra.run.dir={tmp_path / 'unfrozen'}"], tmp_path),
        "other_model": (["train", "dataset=digits", "epochs=1", "model=lenet5", f"init={pretrained}"], tmp_path),
        "missing_init": (["train", "dataset=digits", "epochs=1", "init=nowhere.pt"], tmp_path),
    })
    for name in ("l2sp", "frozen", "unfrozen"):
        assert_ok(runs[name])
        summary = read_json(tmp_path / name / "summary.json")
        # synthetic (5 classes, RGB) -> digits (10 classes, gray): new head, first conv adapted, rest loaded
        assert summary["init"]["new"] == ["head.5.weight", "head.5.bias"]
        assert summary["init"]["adapted"] == ["features.0.0.weight"]
        assert "loaded" in runs[name].stdout and "classifier head re-created for 10 classes" in runs[name].stdout
        best = _load(tmp_path / name / "checkpoints" / "best.pt")
        assert best["input"]["size"] == 32 and best["input"]["channels"] == 1  # the init's size, digits' channels
        assert best["input"]["mean"] == [pytest.approx(sum(_load(pretrained)["input"]["mean"]) / 3)]
    init_state = _load(pretrained)["state_dict"]
    frozen = _load(tmp_path / "frozen" / "checkpoints" / "last.pt")["state_dict"]
    for key, value in init_state.items():
        if key.startswith("features.") and key != "features.0.0.weight":
            assert torch.equal(frozen[key], value), f"{key} changed under finetune.freeze=encoder"
    unfrozen = _load(tmp_path / "unfrozen" / "checkpoints" / "last.pt")["state_dict"]
    assert not torch.equal(unfrozen["features.1.0.weight"], init_state["features.1.0.weight"])
    assert not torch.equal(unfrozen["features.1.1.running_var"], init_state["features.1.1.running_var"])
    assert "the encoder trains from now on" in runs["unfrozen"].stdout
    assert_user_error(runs["other_model"], "simple_cnn checkpoint", "model=lenet5")
    assert_user_error(runs["missing_init"], "nowhere.pt")


def test_eval_writes_features_and_labels(pretrained, tmp_path):
    runs = run_in_one_process({
        "features": (["eval", f"checkpoint={pretrained}", "features=true", f"hydra.run.dir={tmp_path / 'ev'}"],
                     tmp_path),
        "ensemble": (["eval", f"checkpoint=[{pretrained},{pretrained}]", "features=true"], tmp_path),
        "tta": (["eval", f"checkpoint={pretrained}", "features=true", "tta=hflip_shift",
                 f"hydra.run.dir={tmp_path / 'tta'}"], tmp_path),
    })
    assert_ok(runs["features"])
    features, labels = np.load(tmp_path / "ev" / "features.npy"), np.load(tmp_path / "ev" / "labels.npy")
    rows = read_csv(tmp_path / "ev" / "predictions.csv")
    assert features.shape == (len(rows), 32) and features.dtype == np.float32  # model.hidden=32 in TINY
    classes = _load(pretrained)["classes"]
    assert labels.tolist() == [classes.index(r["target"]) for r in rows]
    # The embeddings carry the classes: a nearest-centroid classifier on them beats chance by far.
    centroids = np.stack([features[labels == c].mean(0) for c in np.unique(labels)])
    nearest = np.argmin(((features[:, None] - centroids[None]) ** 2).sum(-1), 1)
    assert (np.unique(labels)[nearest] == labels).mean() > 0.6
    assert_user_error(runs["ensemble"], "features=true", "2 files")
    assert_ok(runs["tta"])  # with test-time augmentation the embeddings are still those of the images themselves
    assert np.array_equal(np.load(tmp_path / "tta" / "features.npy"), features)


def _target_csv(folder, labels: list[int]) -> str:
    """A CSV target domain over fixed image files, every row's split named (so labels choose nothing)."""
    path = folder / f"target_{'_'.join(map(str, labels[:3]))}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for i, label in enumerate(labels):
            writer.writerow([f"img/{i:03d}.png", ["horizontal", "vertical", "diagonal", "circular", "noise"][label],
                             "train" if i < 40 else "val" if i < 48 else "test"])
    return str(path)


def test_domain_adversarial_training_through_the_cli_never_uses_target_labels(tmp_path):
    gen = np.random.default_rng(0)
    for i in range(64):
        write_png(tmp_path / "img" / f"{i:03d}.png", (255 - gen.integers(0, 256, (3, 32, 32))).astype(np.uint8))
    labels = [i % 5 for i in range(64)]
    shuffled = [int(v) for v in gen.permutation(labels)]
    common = ["train", *TINY[:-1], "epochs=2", "domain.target=csv", "domain.lambda=0.5", "device=cpu"]
    runs = run_in_one_process({
        "a": ([*common, f"domain.target_root={_target_csv(tmp_path, labels)}", f"hydra.run.dir={tmp_path / 'a'}"],
              tmp_path),
        "b": ([*common, f"domain.target_root={_target_csv(tmp_path, shuffled)}", f"hydra.run.dir={tmp_path / 'b'}"],
              tmp_path),
    })
    assert_ok(runs["a"])
    assert_ok(runs["b"])
    rows = read_csv(tmp_path / "a" / "metrics.csv")
    assert len(rows) == 2
    for column in ("domain_lambda", "domain_loss", "domain_accuracy", "target_accuracy"):
        assert rows[-1][column] != "", column
    assert 0 < float(rows[0]["domain_lambda"]) < float(rows[1]["domain_lambda"]) <= 0.5  # the ramp
    assert "target_acc" in runs["a"].stdout and "target accuracy" in runs["a"].stdout
    # Other target labels: the same weights (labels never reach training), another target accuracy.
    a, b = _load(tmp_path / "a" / "checkpoints" / "last.pt"), _load(tmp_path / "b" / "checkpoints" / "last.pt")
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert torch.equal(a["domain"]["classifier"]["6.weight"], b["domain"]["classifier"]["6.weight"])
    assert read_json(tmp_path / "a" / "summary.json")["target_accuracy"] is not None


def test_dann_on_shifted_digits_through_the_cli(tmp_path):
    result = run_cli("train", "dataset=digits", "dataset.max_train_samples=128", "dataset.max_eval_samples=100",
                     "epochs=2", *SMALL_ARGS, "domain.target=digits_inverted", f"hydra.run.dir={tmp_path / 'r'}",
                     cwd=tmp_path)
    assert_ok(result)
    assert "target digits_inverted" in result.stdout
    summary = read_json(tmp_path / "r" / "summary.json")
    assert summary["status"] == "completed" and 0 <= summary["target_accuracy"] <= 1
