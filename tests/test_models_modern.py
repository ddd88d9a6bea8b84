"""DenseNet and EfficientNet: any input shape, torchvision's parameter counts, compound scaling, stochastic depth."""
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from imgcls_cli.errors import UserError
from imgcls_cli.models import create_model, input_size
from imgcls_cli.models.densenet import DenseBlock
from imgcls_cli.models.efficientnet import (ALPHA, B0_STAGES, BETA, GAMMA, MBConv, StochasticDepth, compound_scaling,
                                            scaled_resolution)

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
DENSENETS = ["densenet121", "densenet_bc_100"]
PRESETS = {"efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 260, "efficientnet_b3": 300}
EFFICIENTNETS = ["efficientnet", *PRESETS]
NAMES = DENSENETS + EFFICIENTNETS


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of two tiny images: one thread is as fast, and never stalls in spin-waits when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    kwargs = {"num_classes": 10, "in_channels": 3, "image_size": 32, **kwargs}
    return create_model(name, **kwargs)


@pytest.mark.parametrize("name", ["densenet_bc_100", "efficientnet_b0"])
def test_without_batch_norm_and_other_activation(name):
    model = build(name, in_channels=1, image_size=28, batch_norm=False, activation="gelu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GELU) for m in model.modules())
    out = model(torch.randn(2, 1, 28, 28))
    out.sum().backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_mistakes_are_user_errors(name):
    with pytest.raises(UserError, match="depth"):
        build(name, depth=3)
    with pytest.raises(UserError, match="activation"):
        build(name, activation="swishy")


# --------------------------------------------------------------------------------------------- against torchvision
@pytest.mark.parametrize("name", ["densenet121", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
                                  "efficientnet_b3"])
def test_parameter_counts_match_torchvision(name):
    torchvision = pytest.importorskip("torchvision")
    reference = n_params(getattr(torchvision.models, name)(weights=None))
    model = build(name, num_classes=1000, image_size=224)
    assert n_params(model) == pytest.approx(reference, rel=0.01)
    if name in ("densenet121", "efficientnet_b0"):
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_efficientnet_phi_0_is_b0():
    assert n_params(build("efficientnet", num_classes=1000)) == n_params(build("efficientnet_b0", num_classes=1000))


# --------------------------------------------------------------------------------------------- DenseNet
def test_densenet_bc_100_is_the_cifar_network():
    model = build("densenet_bc_100")
    blocks = [m for m in model.modules() if isinstance(m, DenseBlock)]
    assert [len(b) for b in blocks] == [16, 16, 16]
    assert 750_000 < n_params(model) < 850_000  # the paper's "0.8M"
    assert model.stem[0].in_channels == 3 and model.stem[0].out_channels == 24  # 2k from a 3x3 conv
    assert model.stem[0].kernel_size == (3, 3)


@pytest.mark.parametrize("name,growth", [("densenet121", 32), ("densenet_bc_100", 12)])
def test_dense_layers_see_every_earlier_feature_map(name, growth):
    model = build(name)
    for block in (m for m in model.modules() if isinstance(m, DenseBlock)):
        first = block[0].conv1.in_channels
        assert [layer.conv1.in_channels for layer in block] == [first + i * growth for i in range(len(block))]
        x = torch.randn(2, first, 4, 4)
        with torch.no_grad():
            out = block(x)
        assert out.shape[1] == first + len(block) * growth
        assert torch.equal(out[:, :first], x)  # the block's input is passed on unchanged


def test_densenet_stem_adapts_to_image_size():
    small, big = build("densenet121", image_size=32), build("densenet121", image_size=224)
    assert small.stem[0].kernel_size == (3, 3) and small.stem[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in small.modules())
    assert big.stem[0].kernel_size == (7, 7) and isinstance(big.stem[-1], torch.nn.MaxPool2d)
    with pytest.raises(UserError, match="stem"):
        build("densenet121", stem="huge")


@pytest.mark.parametrize("name,stem,size,pools", [("densenet121", "small", 2, 1), ("densenet121", "imagenet", 28, 2),
                                                  ("densenet_bc_100", "small", 28, 2)])
def test_densenet_transitions_never_pool_a_map_to_nothing(name, stem, size, pools):
    model = build(name, in_channels=1, image_size=size, stem=stem)
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in model.modules()) == pools
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------- compound scaling
@pytest.mark.parametrize("phi", [0, 1, 2, 3])
def test_compound_scaling_follows_the_formula(phi):
    assert compound_scaling(phi) == pytest.approx((1.2**phi, 1.1**phi, 1.15**phi))
    assert scaled_resolution(phi) == round(224 * 1.15**phi)
    assert input_size("efficientnet", {"phi": phi, "base_image_size": 224}) == round(224 * 1.15**phi)


def test_compound_scaling_doubles_flops_per_step():
    assert abs(ALPHA * BETA**2 * GAMMA**2 - 2) < 0.1


def test_input_sizes_asked_for():
    assert input_size("efficientnet", {"phi": 1}) == 258
    assert input_size("efficientnet", {"phi": 2, "base_image_size": 100}) == round(100 * 1.15**2)
    for name, resolution in PRESETS.items():
        kwargs = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml")).items() if k != "name"}
        assert input_size(name, kwargs) == resolution
    assert input_size("densenet121", {}) is None


def test_larger_phi_gives_deeper_and_wider_networks():
    counts, blocks = [], []
    for phi in range(4):
        model = build("efficientnet", phi=phi)
        counts.append(n_params(model))
        blocks.append(sum(isinstance(m, MBConv) for m in model.modules()))
        assert blocks[-1] == sum(math.ceil(layers * ALPHA**phi - 1e-9) for *_, layers in B0_STAGES)
    assert counts == sorted(set(counts)) and blocks == sorted(set(blocks))  # strictly increasing
    assert blocks[0] == 16


def test_width_and_depth_multipliers_override_phi():
    overridden = build("efficientnet", phi=3, width_mult=1.0, depth_mult=1.0)
    assert n_params(overridden) == n_params(build("efficientnet_b0"))


# --------------------------------------------------------------------------------------------- stochastic depth
def test_stochastic_depth_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    layer = StochasticDepth(0.5).train()
    out = layer(torch.ones(4000, 2, 3, 3))
    per_sample = out.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()  # dropped, or kept and rescaled by 1/(1-p)
    assert 0.45 < (per_sample[:, 0] == 0).float().mean() < 0.55
    assert torch.equal(layer.eval()(torch.ones(3, 2)), torch.ones(3, 2))


@pytest.mark.parametrize("name", EFFICIENTNETS)
def test_drop_path_varies_training_outputs_only(name):
    x = torch.randn(2, 3, 32, 32)
    quiet, noisy = build(name, drop_rate=0.0, drop_path_rate=0.0), build(name, drop_rate=0.0, drop_path_rate=0.95)
    rates = [m.p for m in noisy.modules() if isinstance(m, StochasticDepth)]
    assert rates == sorted(rates) and rates[0] < 0.2 and 0.5 < rates[-1] < 0.95  # rising linearly with depth
    with torch.no_grad():  # same seed, same weights: in eval mode drop path changes nothing
        assert torch.equal(noisy.eval()(x), noisy(x)) and torch.allclose(noisy(x), quiet.eval()(x))
    outputs = {}
    for key, model in (("quiet", quiet), ("noisy", noisy)):
        model.train()
        runs = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            runs.append(model(x))
        outputs[key] = runs
    assert torch.equal(*outputs["quiet"])  # batch statistics alone are deterministic
    assert not torch.allclose(*outputs["noisy"])  # some residual branches were dropped
