import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from omegaconf import OmegaConf

from imgcls_cli.data import augment_ops, autoaugment
from imgcls_cli.data.augment import AUGMENTS, build_augment
from imgcls_cli.errors import UserError
from imgcls_cli.plots import _preview_title, plot_augment_preview

CONF = Path(__file__).resolve().parents[1] / "conf" / "augment"

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


# --- Every op: shape, dtype, range, probability, seeds. ---

OPS = {
    "hflip": {"p": 1.0},
    "vflip": {"p": 1.0},
    "rotation": {"p": 1.0, "degrees": 30},
    "scale": {"p": 1.0, "range": [0.7, 1.3]},
    "translate": {"p": 1.0, "fraction": 0.2},
    "brightness": {"p": 1.0, "range": 0.4},
    "contrast": {"p": 1.0, "range": 0.4},
    "hue": {"p": 1.0, "range": 0.3},
    "saturation": {"p": 1.0, "range": 0.6},
    "random_resized_crop": {"p": 1.0},
    "random_erasing": {"p": 1.0, "value": "noise"},
    "randaugment": {"p": 1.0},
    "trivialaugment": {"p": 1.0},
}
COLOUR_OPS = ("hue", "saturation")


def test_every_registered_op_is_tested_here():
    assert set(AUGMENTS.names()) - {"mixup", "cutmix"} == set(OPS)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(OPS))
def test_op_keeps_shape_dtype_and_range(name, channels):
    x = batch(c=channels)
    y = build_augment({name: OPS[name]})(x.clone(), torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    if channels == 3 or name not in COLOUR_OPS:
        assert not torch.allclose(x, y)


@pytest.mark.parametrize("name", list(OPS))
def test_op_at_probability_zero_is_the_identity(name):
    x = batch()
    y = build_augment({name: {**OPS[name], "p": 0.0}})(x.clone(), torch.Generator().manual_seed(1))
    assert torch.allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("name", list(OPS))
def test_op_same_seed_same_batch_other_seed_other_batch(name):
    aug = build_augment({name: {**OPS[name], "p": 0.5}})
    a, b, c = (aug(batch(), torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", COLOUR_OPS)
def test_colour_ops_leave_gray_images_alone(name):
    x = batch(c=1)
    assert torch.equal(build_augment({name: OPS[name]})(x, torch.Generator().manual_seed(0)), x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(OPS))
def test_op_gives_the_same_batch_on_cuda_as_on_cpu(name):
    aug = build_augment({name: {**OPS[name], "p": 0.5}})
    cpu = aug(batch(), torch.Generator().manual_seed(2))
    cuda = aug(batch().cuda(), torch.Generator().manual_seed(2)).cpu()
    assert (cpu - cuda).abs().mean() < 1e-3


def test_ops_draw_per_sample_parameters():
    x = batch()[:1].expand(32, -1, -1, -1).contiguous()  # one image, 32 times
    for name in ("rotation", "hue", "saturation", "random_resized_crop", "random_erasing"):
        y = build_augment({name: OPS[name]})(x, torch.Generator().manual_seed(0))
        assert len(torch.unique(y.flatten(1), dim=0)) > 16, name


def test_hue_shift_keeps_each_pixels_max_and_min_channel():
    x = batch()
    y = build_augment({"hue": {"p": 1.0, "range": 0.5}})(x, torch.Generator().manual_seed(0))
    assert torch.allclose(y.amax(1), x.amax(1), atol=1e-5) and torch.allclose(y.amin(1), x.amin(1), atol=1e-5)


def test_hue_shift_is_torchvisions_adjust_hue_per_sample():
    x, shifts = batch(n=4), torch.tensor([-0.5, -0.1, 0.2, 0.45])
    expected = torch.cat([TF.adjust_hue(x[i:i + 1], float(s)) for i, s in enumerate(shifts)])
    assert torch.allclose(augment_ops._shift_hue(x, shifts), expected, atol=1e-5)


def test_saturation_keeps_the_luma_and_changes_the_colours():
    x = 0.4 + 0.2 * batch()  # away from 0 and 1, so nothing clips
    y = build_augment({"saturation": {"p": 1.0, "range": 0.6}})(x, torch.Generator().manual_seed(0))
    assert torch.allclose(TF.rgb_to_grayscale(y), TF.rgb_to_grayscale(x), atol=1e-4)  # weights sum to 0.9999
    assert not torch.allclose(x, y, atol=1e-3)


def ramp(n=8, size=32):
    """Images whose value is the column index / (size - 1): a horizontal gradient."""
    return (torch.arange(size) / (size - 1)).expand(n, 1, size, size).contiguous()


def test_random_resized_crop_of_the_whole_image_is_the_identity():
    x = batch()
    y = build_augment({"random_resized_crop": {"scale": [1, 1], "ratio": [1, 1]}})(x, torch.Generator())
    assert torch.allclose(x, y, atol=1e-5)


def test_random_resized_crop_zooms_in_by_the_square_root_of_the_area():
    x = ramp()
    y = build_augment({"random_resized_crop": {"scale": [0.25, 0.25], "ratio": [1, 1]}})(x, torch.Generator())
    slope = y[..., 4:-4].diff(dim=-1).mean() * 31
    assert slope == pytest.approx(0.5, abs=0.01)  # half the width shown on the full width
    assert torch.allclose(y, y[:, :, :1].expand_as(y), atol=1e-5)  # rows still equal: no rotation or shear
    assert len(torch.unique(y[:, 0, 0, 0])) == len(y)  # each sample its own box


def test_random_resized_crop_composes_with_the_affine_ops():
    aug = build_augment({"random_resized_crop": {}, "rotation": {"p": 1.0}, "hflip": {"p": 0.5}})
    assert len(aug.affine) == 2
    y = aug(batch(), torch.Generator().manual_seed(0))
    assert y.shape == batch().shape and 0 <= y.min() and y.max() <= 1


@pytest.mark.parametrize("seed", range(4))
def test_random_erasing_fills_one_rectangle_per_image(seed):
    x = torch.ones(16, 3, 32, 32)
    y = build_augment({"random_erasing": {"p": 1.0, "value": 0}})(x, torch.Generator().manual_seed(seed))
    erased = y == 0
    assert torch.equal(erased, erased[:, :1].expand_as(erased))  # all channels
    for mask in erased[:, 0]:
        rows, cols = mask.any(1).sum(), mask.any(0).sum()
        assert mask.sum() == rows * cols  # a rectangle
        assert 0.01 <= mask.float().mean() <= 0.4  # area in scale (0.02, 0.33), up to rounding


def test_random_erasing_noise_is_random_per_pixel():
    x = torch.zeros(8, 3, 32, 32)
    y = build_augment({"random_erasing": {"p": 1.0, "value": "noise"}})(x, torch.Generator().manual_seed(0))
    erased = y[y > 0]
    assert erased.numel() > 8 * 3 * 10 and erased.std() > 0.2


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment"])
def test_auto_augment_gives_each_sample_its_own_ops(name):
    x = batch()[:1].expand(64, -1, -1, -1).contiguous()
    y = build_augment({name: {}})(x, torch.Generator().manual_seed(0))
    distinct = torch.unique(y.flatten(1), dim=0)
    assert len(distinct) > 20
    assert (y - x).abs().flatten(1).amax(1).eq(0).sum() < 32  # most samples changed


def test_randaugment_with_no_ops_is_the_identity():
    x = batch()
    assert torch.equal(build_augment({"randaugment": {"num_ops": 0}})(x, torch.Generator()), x)


@pytest.mark.parametrize("space,torchvision_class", [
    (autoaugment.RANDAUGMENT_SPACE, T.RandAugment), (autoaugment.TRIVIALAUGMENT_SPACE, T.TrivialAugmentWide)])
def test_auto_augment_tables_are_torchvisions(space, torchvision_class):
    reference = torchvision_class._AUGMENTATION_SPACE
    assert list(space) == list(reference)
    for name, (table, signed) in reference.items():
        ours, our_signed = space[name]
        assert our_signed == signed
        expected = table(31, 28, 40)
        assert (ours is None) == (expected is None)
        if expected is not None:
            assert torch.equal(ours(31, 28, 40), expected), name


def _torchvision_op(name, x, m):
    """torchvision.transforms.v2.functional's version of an auto-augment op at one magnitude (bilinear)."""
    bilinear = T.InterpolationMode.BILINEAR
    shear = math.degrees(math.atan(m))
    return {
        "ShearX": lambda: TF.affine(x, 0.0, [0, 0], 1.0, [shear, 0.0], bilinear, center=[0, 0]),
        "ShearY": lambda: TF.affine(x, 0.0, [0, 0], 1.0, [0.0, shear], bilinear, center=[0, 0]),
        "TranslateX": lambda: TF.affine(x, 0.0, [int(m), 0], 1.0, [0.0, 0.0], bilinear),
        "TranslateY": lambda: TF.affine(x, 0.0, [0, int(m)], 1.0, [0.0, 0.0], bilinear),
        "Rotate": lambda: TF.rotate(x, m, bilinear),
        "Brightness": lambda: TF.adjust_brightness(x, 1 + m),
        "Color": lambda: TF.adjust_saturation(x, 1 + m),
        "Contrast": lambda: TF.adjust_contrast(x, 1 + m),
        "Sharpness": lambda: TF.adjust_sharpness(x, 1 + m),
        "Posterize": lambda: TF.posterize(x, int(m)),
        "Solarize": lambda: TF.solarize(x, m),
        "AutoContrast": lambda: TF.autocontrast(x),
        "Equalize": lambda: TF.equalize(x),
    }[name]()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", list(autoaugment._AUTO_OPS))
def test_auto_augment_ops_match_torchvision(name, channels):
    x = torch.rand(4, channels, 12, 20, generator=torch.Generator().manual_seed(0))
    for m in {"Posterize": [4.0, 6.0], "Solarize": [0.3, 0.7]}.get(name, [0.3, -0.45, 6.0]):
        if abs(m) > 1 and name in ("Brightness", "Color", "Contrast", "Sharpness"):
            continue
        ours = autoaugment._AUTO_OPS[name](x, torch.full((4,), m))
        assert torch.allclose(ours, _torchvision_op(name, x, m), atol=1e-5), (name, m)


def test_auto_augment_ops_take_one_magnitude_per_sample():
    x = batch(n=3)
    magnitudes = torch.tensor([0.1, -0.2, 0.3])
    for name in ("ShearX", "Rotate", "Brightness", "Sharpness"):
        ours = autoaugment._AUTO_OPS[name](x, magnitudes * (20 if name == "Rotate" else 1))
        for i, m in enumerate(magnitudes * (20 if name == "Rotate" else 1)):
            assert torch.allclose(ours[i:i + 1], _torchvision_op(name, x[i:i + 1], float(m)), atol=1e-5)


# --- Config mistakes and presets. ---

@pytest.mark.parametrize("ops,message", [
    ({"hue": {"range": 0.6}}, r"augment\.hue\.range must be in \[0, 0\.5\]"),
    ({"saturation": {"range": -1}}, r"augment\.saturation\.range must be in \[0, 1\)"),
    ({"saturation": {"p": "often"}}, r"augment\.saturation\.p must be a number"),
    ({"scale": {"range": [1.2, 0.8]}}, r"augment\.scale\.range must be two numbers"),
    ({"random_resized_crop": {"scale": [0.5, 0.2]}}, r"augment\.random_resized_crop\.scale must be two numbers"),
    ({"random_resized_crop": {"scale": [0.0, 1.0]}}, r"augment\.random_resized_crop\.scale"),
    ({"random_resized_crop": {"scale": [0.5, 1.5]}}, r"augment\.random_resized_crop\.scale .* <= 1"),
    ({"random_resized_crop": {"ratio": 0.75}}, r"augment\.random_resized_crop\.ratio must be two numbers"),
    ({"random_erasing": {"ratio": ["a", "b"]}}, r"augment\.random_erasing\.ratio"),
    ({"random_erasing": {"value": 2}}, r"augment\.random_erasing\.value must be a gray level"),
    ({"random_erasing": {"value": "pixel"}}, r"augment\.random_erasing\.value must be a gray level .* or .noise."),
    ({"rotation": {"degrees": "ten"}}, r"augment\.rotation\.degrees must be a number"),
    ({"randaugment": {"magnitude": 31}}, r"augment\.randaugment\.magnitude must be a whole number in \[0, 30\]"),
    ({"randaugment": {"num_ops": -1}}, r"augment\.randaugment\.num_ops must be a whole number >= 0"),
    ({"randaugment": {"num_ops": 1.5}}, r"augment\.randaugment\.num_ops must be a whole number"),
    ({"trivialaugment": {"num_magnitude_bins": 1}}, r"augment\.trivialaugment\.num_magnitude_bins"),
    ({"randaugment": {"magnitde": 9}}, r"augment\.randaugment: .*magnitde"),
    ({"randaugmnet": {}}, "Did you mean randaugment"),
])
def test_bad_new_op_config_is_a_one_line_user_error(ops, message):
    with pytest.raises(UserError, match=message) as info:
        build_augment(ops)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_builds_and_documents_itself(path):
    text = path.read_text()
    assert text.startswith("# ")
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    assert cfg["name"] == path.stem
    aug = build_augment(cfg)
    assert bool(aug) == (path.stem != "none")
    assert (aug.mixer(10) is not None) == (path.stem in ("mixup", "cutmix"))
    y = aug(batch(), torch.Generator().manual_seed(0))
    assert y.shape == batch().shape and 0 <= y.min() and y.max() <= 1
    commented = [line for line in text.splitlines()[1:] if line.startswith(" ") and ":" in line and "#" in line]
    assert commented or path.stem == "none"


def test_strong_preset_is_flip_randaugment_and_erasing():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "strong.yaml"))
    assert {"hflip", "randaugment", "random_erasing"} <= set(cfg)


# --- Preview of augmented samples. ---

def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(path.parent.glob("*.tmp"))
    image = mpimg.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_augment_preview_of_gray_images_with_hard_labels(tmp_path):
    x = build_augment(BASIC)(batch(n=6, c=1), torch.Generator())
    plot_augment_preview(x, torch.tensor([0, 1, 2, 0, 1, 2]), ["T-shirt", "Coat", "Bag"], tmp_path / "a" / "p.png")
    _assert_png(tmp_path / "a" / "p.png")


def test_augment_preview_of_normalized_rgb_images_with_soft_targets(tmp_path):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.2, 0.2]
    x = (batch(n=40) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    targets = torch.eye(3)[torch.arange(40) % 3] * 0.7 + torch.eye(3)[(torch.arange(40) + 1) % 3] * 0.3
    plot_augment_preview(x, targets, ["T-shirt", "Coat", "Bag"], tmp_path / "p.png", mean=mean, std=std)
    image = _assert_png(tmp_path / "p.png")
    assert image.shape[1] > image.shape[0]  # 8 columns, 4 rows at most


def test_augment_preview_titles():
    classes = ["T-shirt", "Coat", "Bag"]
    assert _preview_title(np.array(1.0), classes) == "Coat"
    assert _preview_title(np.array([0.0, 0.7, 0.3]), classes) == "Coat 0.70 / Bag 0.30"
    assert _preview_title(np.array([0.0, 0.0, 1.0]), classes) == "Bag"
