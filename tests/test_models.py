import pytest
import torch

from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.engine.inference import model_from_checkpoint
from imgcls_cli.errors import UserError
from imgcls_cli.models import MODELS, create_model, list_models

SMALL = {"resnet": {"depth": 10, "width": 8}, "simple_cnn": {"widths": [8, 16, 16], "hidden": 32}}


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_forward_backward_any_channels_and_size(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=channels, image_size=size, **SMALL.get(name, {}))
    x = torch.randn(4, channels, size, size)
    out = model(x)
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 7)


@pytest.mark.parametrize("name", list_models())
def test_same_seed_same_init(name):
    def build():
        torch.manual_seed(123)
        return create_model(name, num_classes=3, in_channels=3, image_size=32, **SMALL.get(name, {}))

    a, b = build().state_dict(), build().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("depth,params", [(18, 11_689_512), (50, 25_557_032)])
def test_resnet_matches_torchvision_parameter_counts(depth, params):
    model = create_model("resnet", num_classes=1000, in_channels=3, image_size=224, depth=depth)
    assert sum(p.numel() for p in model.parameters()) == params


def test_resnet_stem_adapts_to_image_size():
    small = create_model("resnet", num_classes=10, in_channels=3, image_size=32, depth=10, width=8)
    big = create_model("resnet", num_classes=10, in_channels=3, image_size=224, depth=10, width=8)
    assert small.stem[0].kernel_size == (3, 3) and small.stem[0].stride == (1, 1)
    assert big.stem[0].kernel_size == (7, 7) and isinstance(big.stem[-1], torch.nn.MaxPool2d)


def test_resnet_zero_init_residual_starts_blocks_at_identity():
    model = create_model("resnet", num_classes=10, in_channels=3, image_size=32, depth=18, zero_init_residual=True)
    assert all(block.last_bn().weight.abs().sum() == 0 for stage in model.stages for block in stage)


def test_unknown_builder_keyword_is_a_user_error():
    with pytest.raises(UserError, match="model 'simple_cnn'.*unexpected keyword argument 'depth'"):
        create_model("simple_cnn", num_classes=10, depth=3)


def test_bad_resnet_depth_is_a_user_error():
    with pytest.raises(UserError, match="model.depth must be one of"):
        create_model("resnet", num_classes=10, depth=19)


def test_every_registered_model_has_a_config():
    from imgcls_cli.paths import CONF_DIR

    assert {p.stem for p in (CONF_DIR / "model").glob("*.yaml")} >= set(MODELS.names())


@pytest.mark.parametrize("name", ["simple_cnn", "resnet"])
def test_tiny_inputs_never_collapse(name):
    model = create_model(name, num_classes=3, in_channels=1, image_size=8, **SMALL.get(name, {}))
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("name", list_models())
def test_checkpoint_round_trip_gives_the_same_logits(name, tmp_path):
    torch.manual_seed(0)
    kwargs = {"num_classes": 5, "in_channels": 3, "image_size": 32, **SMALL.get(name, {})}
    model = create_model(name, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    save_checkpoint({"model": {"name": name, "kwargs": kwargs}, "state_dict": model.state_dict(),
                     "classes": list("abcde"), "input": {"channels": 3, "size": 32, "mean": [0.5] * 3,
                                                         "std": [0.25] * 3}, "config": {}}, tmp_path / "m.pt")
    loaded = model_from_checkpoint(load_checkpoint(tmp_path / "m.pt"), torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
