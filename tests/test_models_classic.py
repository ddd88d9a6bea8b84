"""LeNet-5, AlexNet and VGG-11/13/16/19: any channels and size from 28 to 224 px, the papers' and torchvision's
parameter counts, stems, heads and choices (tests/test_models.py covers what every model must do).

Shape-only checks build on the meta device (no memory, no compute), so even 224 px VGGs cost milliseconds.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.models import create_model

NAMES = ["lenet5", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19"]
# Every side where a stem, pool or head decision changes, plus the ends of the supported range.
SIZES = [28, 29, 30, 31, 32, 33, 36, 47, 62, 63, 64, 65, 95, 96, 111, 112, 127, 160, 223, 224]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def module_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


def on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_every_size_from_28_to_224_gives_one_score_per_class(name):
    for i, size in enumerate(SIZES):
        channels = (1, 3)[i % 2]
        model = on_meta(name, num_classes=5, in_channels=channels, image_size=size)
        assert model(torch.empty(2, channels, size, size, device="meta")).shape == (2, 5), f"{name} at {size} px"


@pytest.mark.parametrize("name", ["alexnet", "vgg11"])
def test_forward_at_224_px(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000, in_channels=3, image_size=224).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,knobs,reference_name", [("alexnet", {}, "alexnet"),
                                                        ("vgg16", {"batch_norm": False}, "vgg16"),
                                                        ("vgg16", {"batch_norm": True}, "vgg16_bn")])
def test_parameter_count_matches_torchvision_at_224_px(name, knobs, reference_name):
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        reference = n_params(getattr(torchvision.models, reference_name)(weights=None))
    ours = n_params(on_meta(name, num_classes=1000, in_channels=3, image_size=224, **knobs))
    assert abs(ours - reference) <= 0.01 * reference, (ours, reference)


@pytest.mark.parametrize("size,padding", [(32, 0), (28, 2)])
def test_lenet5_has_the_papers_61706_parameters(size, padding):
    model = create_model("lenet5", num_classes=10, in_channels=1, image_size=size)
    assert n_params(model) == 61_706
    assert model.features[0].padding == (padding, padding)  # the classic MNIST LeNet pads 28 px to 32


def test_lenet5_activation_and_pool_pick_the_layers():
    paper = module_types(create_model("lenet5", num_classes=10, in_channels=1, image_size=32))
    modern = module_types(create_model("lenet5", num_classes=10, in_channels=1, image_size=32,
                                       activation="relu", pool="max"))
    assert {nn.Tanh, nn.AvgPool2d} <= paper and not {nn.ReLU, nn.MaxPool2d} & paper
    assert {nn.ReLU, nn.MaxPool2d} <= modern and not {nn.Tanh, nn.AvgPool2d} & modern


def test_alexnet_stem_follows_the_input_size():
    def first_conv(**kwargs) -> nn.Conv2d:
        return on_meta("alexnet", num_classes=10, in_channels=3, **kwargs).features[0]

    assert first_conv(image_size=63).kernel_size == (3, 3) and first_conv(image_size=63).stride == (1, 1)
    assert first_conv(image_size=64).kernel_size == (11, 11) and first_conv(image_size=64).stride == (4, 4)
    assert first_conv(image_size=224, stem="small").kernel_size == (3, 3)
    assert first_conv(image_size=32, stem="imagenet").kernel_size == (11, 11)


def test_alexnet_lrn_follows_conv1_and_conv2():
    model = on_meta("alexnet", num_classes=10, in_channels=3, image_size=224, lrn=True)
    lrn_after = [type(prev) for prev, m in zip(model.features, model.features[1:])
                 if isinstance(m, nn.LocalResponseNorm)]
    assert lrn_after == [nn.ReLU, nn.ReLU]
    assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)][:2] == [64, 192]
    assert nn.LocalResponseNorm not in module_types(on_meta("alexnet", num_classes=10, image_size=224))


@pytest.mark.parametrize("size,hidden,grid", [(28, 512, 1), (32, 512, 1), (64, 4096, 2), (224, 4096, 7)])
def test_vgg_head_adapts_to_the_input_size(size, hidden, grid):
    model = on_meta("vgg16", num_classes=10, in_channels=3, image_size=size)
    first_fc = next(m for m in model.classifier if isinstance(m, nn.Linear))
    assert (first_fc.in_features, first_fc.out_features) == (512 * grid * grid, hidden)
    shrunk = on_meta("vgg16", num_classes=10, in_channels=3, image_size=size, hidden=64)
    assert next(m for m in shrunk.classifier if isinstance(m, nn.Linear)).out_features == 64


def test_vgg_batch_norm_adds_one_norm_per_conv():
    kinds = [type(m) for m in on_meta("vgg19", num_classes=10, in_channels=3, image_size=32).modules()]
    assert kinds.count(nn.Conv2d) == 16 and kinds.count(nn.BatchNorm2d) == 16
    plain = on_meta("vgg19", num_classes=10, in_channels=3, image_size=32, batch_norm=False)
    assert nn.BatchNorm2d not in module_types(plain)


@pytest.mark.parametrize("name,key,value", [("lenet5", "activation", "swish"), ("lenet5", "pool", "sum"),
                                            ("alexnet", "stem", "huge")])
def test_unknown_choice_is_a_user_error_naming_the_key(name, key, value):
    with pytest.raises(UserError, match=f"model.{key} must be"):
        create_model(name, num_classes=10, **{key: value})
