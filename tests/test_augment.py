import pytest
import torch

from imgcls_cli.data.augment import build_augment
from imgcls_cli.errors import UserError

BASIC = {"name": "basic", "hflip": {"p": 0.5}, "rotation": {"p": 0.5, "degrees": 10},
         "translate": {"p": 0.5, "fraction": 0.1}, "brightness": {"p": 0.5, "range": 0.2},
         "contrast": {"p": 0.5, "range": 0.2}}


def batch(n=16, c=3, size=16):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(0))


def test_basic_keeps_shape_dtype_and_range_and_changes_images():
    x = batch()
    y = build_augment(BASIC)(x.clone(), torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(x, y)


def test_same_seed_same_batch():
    aug = build_augment(BASIC)
    a = aug(batch(), torch.Generator().manual_seed(3))
    b = aug(batch(), torch.Generator().manual_seed(3))
    c = aug(batch(), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_probability_zero_is_the_identity():
    ops = {k: ({**v, "p": 0.0} if isinstance(v, dict) else v) for k, v in BASIC.items()}
    x = batch()
    y = build_augment(ops)(x.clone(), torch.Generator().manual_seed(0))
    assert torch.allclose(x, y, atol=1e-5)


def test_none_preset_is_empty():
    assert not build_augment({"name": "none"})


def test_hflip_mirrors_every_image_at_p_1():
    x = batch()
    y = build_augment({"hflip": {"p": 1.0}})(x.clone(), torch.Generator())
    assert torch.equal(y, x.flip(-1))


def test_brightness_multiplies_by_a_factor_in_range():
    x = torch.full((64, 1, 4, 4), 0.5)
    y = build_augment({"brightness": {"p": 1.0, "range": 0.2}})(x, torch.Generator().manual_seed(0))
    factors = y[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.8 - 1e-6 and factors.max() <= 1.2 + 1e-6
    assert torch.allclose(y, factors.view(-1, 1, 1, 1) * 0.5)  # one factor per image


def test_contrast_keeps_the_image_mean():
    x = 0.3 + 0.4 * batch(c=1)  # away from 0 and 1, so nothing clips
    y = build_augment({"contrast": {"p": 1.0, "range": 0.3}})(x.clone(), torch.Generator().manual_seed(0))
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)


def test_rotation_by_90_degrees_turns_a_bar():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, :] = 1.0  # a horizontal bar
    aug = build_augment({"rotation": {"p": 1.0, "degrees": 90}})
    # Find a draw whose angle is close to +-90 degrees: the bar becomes (almost) vertical.
    for seed in range(200):
        y = aug(x.clone(), torch.Generator().manual_seed(seed))
        if y[0, 0, :, 4].sum() > 6:
            assert y[0, 0, 4, :].sum() < 3
            break
    else:
        pytest.fail("no rotation turned the bar")


def test_translate_shifts_content():
    x = torch.zeros(1, 1, 10, 10)
    x[0, 0, 5, 5] = 1.0
    y = build_augment({"translate": {"p": 1.0, "fraction": 0.3}})(x, torch.Generator().manual_seed(0))
    assert y.sum() > 0 and y[0, 0, 5, 5] < 1.0


@pytest.mark.parametrize("ops,message", [
    ({"rotation": {"p": 1.5}}, "augment.rotation.p must be a probability"),
    ({"brightness": {"range": 2}}, "augment.brightness.range"),
    ({"rotaton": {"p": 0.5}}, "Did you mean rotation"),
    ({"rotation": {"deg": 5}}, "augment.rotation"),
])
def test_bad_augment_config_is_a_user_error(ops, message):
    with pytest.raises(UserError, match=message):
        build_augment(ops)
