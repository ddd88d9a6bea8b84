import pytest
import torch

from imgcls_cli.data.augment import build_augment
from imgcls_cli.data.mix import Mixer
from imgcls_cli.errors import UserError

SEEDS = range(8)


def halves(n=4, size=16):
    """First half of the batch black, second half white; the reversed batch pairs black with white."""
    x = torch.zeros(n, 3, size, size)
    x[n // 2:] = 1.0
    return x, torch.arange(n)


def mixer(mixup=0.0, cutmix=0.0, mix_prob=1.0, switch_prob=0.5, num_classes=4):
    return Mixer(mixup, cutmix, mix_prob, switch_prob, num_classes)


@pytest.mark.parametrize("seed", SEEDS)
def test_cutmix_lambda_is_the_area_actually_pasted(seed):
    x, y = halves()
    mixed, targets = mixer(cutmix=1.0)(x, y, torch.Generator().manual_seed(seed))
    pasted = mixed[0, 0] == 1.0  # white pasted into black
    rows, cols = pasted.any(1).sum(), pasted.any(0).sum()
    assert pasted.sum() == rows * cols  # one box
    assert torch.equal(mixed[:, 1:], mixed[:, :1].expand(-1, 2, -1, -1))  # all channels
    share = pasted.float().mean()
    assert targets[0, 0] == pytest.approx(1 - share.item(), abs=1e-6)
    assert targets[0, 3] == pytest.approx(share.item(), abs=1e-6)
    assert torch.equal(mixed[3, 0] == 0.0, pasted)  # the same box, black into white
    assert torch.allclose(targets.sum(1), torch.ones(4))


def test_cutmix_boxes_vary_with_the_seed_and_may_be_clipped():
    shares = set()
    for seed in range(30):
        mixed, targets = mixer(cutmix=1.0)(*halves(), torch.Generator().manual_seed(seed))
        shares.add(round(float(targets[0, 3]), 6))
    assert len(shares) > 20


@pytest.mark.parametrize("seed", SEEDS)
def test_mixup_blends_each_sample_with_its_partner(seed):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(100 + seed))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    mixed, targets = mixer(mixup=0.2, num_classes=6)(x, y, torch.Generator().manual_seed(seed))
    lam = float(targets[0, 0])
    assert 0.0 <= lam <= 1.0
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.allclose(targets.sum(1), torch.ones(6))
    assert targets[0, 5] == pytest.approx(1 - lam, abs=1e-6)
    assert targets.dtype == torch.float32 and targets.shape == (6, 6)


def test_mixup_lambda_changes_from_batch_to_batch():
    gen = torch.Generator().manual_seed(0)
    lams = {round(float(mixer(mixup=1.0)(*halves(), gen)[1][0, 0]), 6) for _ in range(10)}
    assert len(lams) == 10


def test_mix_prob_zero_leaves_the_batch_alone_with_one_hot_targets():
    x, y = halves()
    for seed in SEEDS:
        mixed, targets = mixer(mixup=1.0, cutmix=1.0, mix_prob=0.0)(x, y, torch.Generator().manual_seed(seed))
        assert torch.equal(mixed, x)
        assert torch.equal(targets, torch.eye(4))


def test_mix_prob_mixes_that_share_of_batches():
    gen = torch.Generator().manual_seed(0)
    mixed = sum(not torch.equal(mixer(mixup=1.0, mix_prob=0.3)(*halves(), gen)[0], halves()[0]) for _ in range(200))
    assert 40 <= mixed <= 80


def _is_cutmix(mixed):
    """CutMix of black and white keeps pure pixels; MixUp makes every pixel gray."""
    return bool(((mixed == 0) | (mixed == 1)).all())


@pytest.mark.parametrize("switch_prob,expected", [(1.0, {True}), (0.0, {False}), (0.5, {True, False})])
def test_switch_prob_picks_cutmix_or_mixup(switch_prob, expected):
    kinds = {_is_cutmix(mixer(mixup=1.0, cutmix=1.0, switch_prob=switch_prob)(
        *halves(), torch.Generator().manual_seed(seed))[0]) for seed in range(20)}
    assert kinds == expected


def test_one_method_alone_ignores_switch_prob():
    for seed in SEEDS:
        gen = torch.Generator().manual_seed(seed)
        assert _is_cutmix(mixer(cutmix=1.0, switch_prob=0.0)(*halves(), gen)[0])
        assert not _is_cutmix(mixer(mixup=1.0, switch_prob=1.0)(*halves(), gen)[0])


def test_same_seed_same_mix_and_the_input_is_not_changed():
    x, y = halves()
    m = mixer(mixup=1.0, cutmix=1.0)
    a = m(x, y, torch.Generator().manual_seed(3))
    b = m(x, y, torch.Generator().manual_seed(3))
    c = m(x, y, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(x, halves()[0])


def test_odd_batch_middle_sample_pairs_with_itself():
    x = torch.rand(5, 1, 8, 8)
    mixed, targets = mixer(mixup=1.0, num_classes=5)(x, torch.arange(5), torch.Generator().manual_seed(0))
    assert torch.equal(targets[2], torch.eye(5)[2])
    assert torch.allclose(mixed[2], x[2], atol=1e-6)


# --- From the augment config. ---

def test_config_builds_the_mixer_and_the_per_image_call_does_not_mix():
    aug = build_augment({"name": "x", "mixup": {"alpha": 0.2}, "cutmix": {"alpha": 1.0},
                         "mix_prob": 0.8, "switch_prob": 0.3})
    assert aug and not aug.affine and not aug.pixel
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(aug(x, torch.Generator()), x)
    m = aug.mixer(10)
    assert (m.mixup_alpha, m.cutmix_alpha, m.mix_prob, m.switch_prob, m.num_classes) == (0.2, 1.0, 0.8, 0.3, 10)
    assert aug.mix_params == {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_prob": 0.8, "switch_prob": 0.3}


@pytest.mark.parametrize("cfg", [{}, {"hflip": {"p": 0.5}}, {"mixup": {"alpha": 0}, "mix_prob": 0.5}])
def test_no_mixer_without_a_positive_alpha(cfg):
    assert build_augment(cfg).mixer(10) is None


def test_mixing_defaults():
    assert build_augment({"mixup": None}).mixer(3).mixup_alpha == 0.2
    m = build_augment({"cutmix": {}}).mixer(3)
    assert (m.cutmix_alpha, m.mixup_alpha, m.mix_prob, m.switch_prob) == (1.0, 0.0, 1.0, 0.5)


@pytest.mark.parametrize("cfg,message", [
    ({"mixup": {"alpha": -0.1}}, r"augment\.mixup\.alpha must be >= 0"),
    ({"cutmix": {"alpha": "big"}}, r"augment\.cutmix\.alpha must be a number"),
    ({"mixup": {"p": 0.5}}, r"augment\.mixup: .*'p'"),
    ({"mix_prob": 1.5}, r"augment\.mix_prob must be a probability in \[0, 1\]"),
    ({"switch_prob": -0.1}, r"augment\.switch_prob must be a probability"),
    ({"mix_prop": 0.5}, "unknown augment key 'mix_prop'. Did you mean mix_prob"),
    ({"mixpu": {"alpha": 0.2}}, "Did you mean mixup"),
])
def test_bad_mixing_config_is_a_one_line_user_error(cfg, message):
    with pytest.raises(UserError, match=message) as info:
        build_augment(cfg)
    assert "\n" not in str(info.value)
