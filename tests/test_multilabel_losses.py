"""Tests for imgcls_cli.multilabel.losses: the asymmetric loss against its formula (worked by hand on two logits,
and written out naively in float64), its reduction, soft targets, label smoothing, positive weights, finite
gradients at extreme logits in fp32 and under bf16 autocast, and the LOSSES registry. In-process: seconds."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from imgcls_cli.multilabel.losses import LOSSES, AsymmetricLoss, MultilabelBCE, pos_weight_from, smooth_targets
from imgcls_cli.registry import UnknownNameError


def _case(seed: int, num_samples: int = 16, num_labels: int = 5, soft: bool = False) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_samples, num_labels, generator=g) * 3
    targets = torch.rand(num_samples, num_labels, generator=g)
    return logits, targets if soft else (targets < 0.3).float()


def _asl_formula(logits: torch.Tensor, targets: torch.Tensor, gamma_pos: float, gamma_neg: float,
                 clip: float) -> float:
    """The paper's formula as written, in float64 numpy, summed over labels and averaged over images."""
    x, y = logits.double().numpy(), targets.double().numpy()
    p = 1 / (1 + np.exp(-x))
    p_m = np.maximum(p - clip, 0)
    loss = y * (1 - p) ** gamma_pos * np.log(p) + (1 - y) * p_m ** gamma_neg * np.log(1 - p_m)
    return float(-loss.sum(axis=1).mean())


def test_asl_on_two_logits_worked_by_hand():
    # logits (2, -1), targets (1, 0), the defaults gamma_pos 0, gamma_neg 4, clip 0.05:
    # positive: p = sigmoid(2) = 0.8807971, weight (1 - p)^0 = 1, -log p = 0.1269280
    # negative: p = sigmoid(-1) = 0.2689414, p_m = 0.2189414, p_m^4 = 0.0022978, -log(1 - p_m) = 0.2471051
    # loss = 0.1269280 + 0.0022978 * 0.2471051 = 0.1274958 (one image: the mean over images is itself)
    logits, targets = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
    assert AsymmetricLoss()(logits, targets).item() == pytest.approx(0.1274958, abs=1e-6)
    # gamma_pos 1, gamma_neg 2, clip 0: (1 - 0.8807971) * 0.1269280 + 0.2689414^2 * -log(1 - 0.2689414)
    # = 0.0151302 + 0.0723295 * 0.3132617 = 0.0377882
    loss = AsymmetricLoss(gamma_pos=1.0, gamma_neg=2.0, clip=0.0)(logits, targets)
    assert loss.item() == pytest.approx(0.0377882, abs=1e-6)


@pytest.mark.parametrize("gamma_pos, gamma_neg, clip", [(0, 4, 0.05), (1, 4, 0.05), (0.5, 0.5, 0), (2, 1, 0.2)])
@pytest.mark.parametrize("soft", [False, True])
def test_asl_is_the_formula(gamma_pos, gamma_neg, clip, soft):
    logits, targets = _case(0, soft=soft)
    loss = AsymmetricLoss(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip)(logits, targets)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_asl_formula(logits, targets, gamma_pos, gamma_neg, clip), rel=1e-5)


@pytest.mark.parametrize("soft", [False, True])
def test_asl_without_focusing_or_shift_is_bce_summed_over_labels(soft):
    logits, targets = _case(1, soft=soft)
    pos_weight = torch.linspace(1, 3, logits.shape[1])
    num_labels = logits.shape[1]
    asl = AsymmetricLoss(gamma_pos=0, gamma_neg=0, clip=0, pos_weight=pos_weight)(logits, targets)
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)  # mean over labels and images
    assert asl.item() == pytest.approx(num_labels * bce.item(), rel=1e-6)
    assert MultilabelBCE(pos_weight=pos_weight)(logits, targets).item() == pytest.approx(bce.item(), rel=1e-6)


def test_asl_is_a_mean_over_images():
    logits, targets = _case(2, num_samples=12)
    asl = AsymmetricLoss()
    whole = asl(logits, targets).item()
    halves = [asl(logits[:4], targets[:4]).item(), asl(logits[4:], targets[4:]).item()]
    assert whole == pytest.approx((4 * halves[0] + 8 * halves[1]) / 12, rel=1e-6)


def test_soft_target_weights_the_positive_and_negative_terms():
    # ASL is linear in y: the loss for y = 0.3 is 0.3 x (loss for y = 1) + 0.7 x (loss for y = 0)
    logits = torch.tensor([[1.5, -0.5, 0.2]])
    asl = AsymmetricLoss(gamma_pos=1.0)
    as_one, as_zero = asl(logits, torch.ones(1, 3)), asl(logits, torch.zeros(1, 3))
    mixed = asl(logits, torch.full((1, 3), 0.3))
    assert mixed.item() == pytest.approx(0.3 * as_one.item() + 0.7 * as_zero.item(), rel=1e-6)


def test_label_smoothing_moves_targets_towards_one_half():
    logits, targets = _case(3)
    eps = 0.2
    assert smooth_targets(torch.tensor([1.0, 0.0, 0.5]), eps).tolist() == pytest.approx([0.9, 0.1, 0.5])
    smoothed = targets * (1 - eps) + eps / 2
    expected = F.binary_cross_entropy_with_logits(logits, smoothed)
    assert MultilabelBCE(smoothing=eps)(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    asl = AsymmetricLoss(smoothing=eps)(logits, targets)
    assert asl.item() == pytest.approx(_asl_formula(logits, smoothed, 0, 4, 0.05), rel=1e-5)


@pytest.mark.parametrize("loss_fn", [
    MultilabelBCE(), MultilabelBCE(smoothing=0.1), AsymmetricLoss(), AsymmetricLoss(gamma_pos=0.5, gamma_neg=0.5),
    AsymmetricLoss(gamma_pos=1, gamma_neg=2, clip=0.0, pos_weight=torch.tensor([2.0, 2.0, 2.0, 2.0])),
], ids=["bce", "bce-smoothed", "asl", "asl-gammas-below-1", "asl-no-clip"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_gradients_are_finite_at_extreme_logits(loss_fn, autocast):
    # every pairing of a logit of +-50 with a target 1 or 0, the confidently wrong ones included
    logits = torch.tensor([[50.0, -50.0, 50.0, -50.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(logits.bfloat16() if autocast else logits, targets)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    # the missed positive (logit -50, target 1) is pushed up in every variant, as hard as a quarter of BCE's full
    # slope at least (BCE averages 4 labels): log-sigmoid keeps its gradient where log(max(p, eps)) has none
    assert logits.grad[0, 1] < -0.2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_losses_under_cuda_autocast_equal_their_fp32_value(dtype):
    logits, targets = _case(4, soft=True)
    logits, targets = logits.cuda(), targets.cuda()
    for loss_fn in (MultilabelBCE(), AsymmetricLoss(gamma_pos=1.0)):
        exact = loss_fn(logits, targets)
        inputs = logits.clone().requires_grad_(True)
        with torch.autocast("cuda", dtype=dtype):
            loss = loss_fn(inputs.to(dtype), targets)
        loss.backward()
        # the logits are rounded to 16 bits once; everything after is fp32
        assert loss.dtype == torch.float32 and loss.item() == pytest.approx(exact.item(), rel=2e-2)
        assert torch.isfinite(inputs.grad).all()


def test_pos_weight_from_counts_negatives_per_positive():
    targets = np.zeros((300, 4))
    targets[:60, 0] = 1  # 240 / 60 = 4
    targets[:1, 2] = 1  # 299: capped at 100
    targets[:200, 3] = 1  # 100 / 200 = 0.5: never below 1
    weights = pos_weight_from(targets)  # label 1: no positives -> 1
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx([4.0, 1.0, 100.0, 1.0])
    assert pos_weight_from(torch.tensor(targets), max_weight=10.0)[2].item() == 10.0
    with pytest.raises(ValueError, match="N, C"):
        pos_weight_from(np.zeros(5))


def test_loss_registry_builds_both_losses_by_name():
    assert LOSSES.names() == ["asl", "bce"]
    weight = torch.ones(3)
    asl = LOSSES.get("asl")(pos_weight=weight, smoothing=0.1, gamma_pos=1.0, gamma_neg=3.0, clip=0.1)
    assert isinstance(asl, AsymmetricLoss)
    assert (asl.gamma_pos, asl.gamma_neg, asl.clip, asl.smoothing) == (1.0, 3.0, 0.1, 0.1)
    assert torch.equal(asl.pos_weight, weight)
    default = LOSSES.get("asl")()
    assert (default.gamma_pos, default.gamma_neg, default.clip) == (0.0, 4.0, 0.05)  # the paper's
    bce = LOSSES.get("bce")(pos_weight=None, smoothing=0.0, gamma_pos=0.0, gamma_neg=4.0, clip=0.05)
    assert isinstance(bce, MultilabelBCE)
    with pytest.raises(UnknownNameError, match=r"unknown loss 'asll'. Did you mean asl\?"):
        LOSSES.get("asll")


def test_pos_weight_is_a_buffer_that_is_not_saved():
    for loss in (MultilabelBCE(pos_weight=torch.ones(3)), AsymmetricLoss(pos_weight=torch.ones(3))):
        assert "pos_weight" in dict(loss.named_buffers())  # .to(device) moves it with the module
        assert "pos_weight" not in loss.state_dict()  # rebuilt from the data, not restored from a checkpoint


@pytest.mark.parametrize("kwargs, match", [
    ({"gamma_neg": -1.0}, "gamma"), ({"clip": 1.0}, "clip"), ({"smoothing": 1.0}, "smoothing"),
])
def test_bad_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AsymmetricLoss(**kwargs)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        MultilabelBCE()(torch.zeros(2, 3), torch.zeros(2, 4))
    assert math.isclose(MultilabelBCE()(torch.zeros(2, 3), torch.ones(2, 3)).item(), math.log(2), rel_tol=1e-6)
