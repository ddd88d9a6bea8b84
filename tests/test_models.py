"""Every registered model: forward and backward, init, configs, checkpoints; the ResNet family's own checks."""
import pytest
import torch
from omegaconf import OmegaConf

from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.engine.inference import model_from_checkpoint
from imgcls_cli.errors import UserError
from imgcls_cli.models import MODELS, create_model, list_models
from imgcls_cli.paths import CONF_DIR

SMALL = {"resnet": {"depth": 10, "width": 8}, "simple_cnn": {"widths": [8, 16, 16], "hidden": 32}}


def build(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **{"num_classes": 10, "in_channels": 3, "image_size": 32, **SMALL.get(name, {}),
                                 **kwargs})


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_forward_backward_in_train_mode_then_eval(name, channels, size):
    model = build(name, num_classes=7, in_channels=channels, image_size=size)
    x, y = torch.randn(4, channels, size, size), torch.tensor([0, 6, 3, 3])
    out = model.train()(x)
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    torch.nn.functional.cross_entropy(out, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        first, again, alone = model.eval()(x), model(x), model(x[:1])
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)  # no dropout, no drop path, no batch statistics in eval mode
    assert torch.allclose(first[:1], alone, atol=1e-5)  # an image's prediction does not depend on its batch


@pytest.mark.parametrize("name", list_models())
def test_same_seed_same_init_other_seed_other_init(name):
    a, b, c = (build(name, seed).state_dict() for seed in (5, 5, 6))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_each_model_config_lists_its_knobs_at_the_builders_defaults(option):
    path = CONF_DIR / "model" / f"{option}.yaml"
    assert path.read_text().startswith("# ")  # says what the model is
    cfg = OmegaConf.to_container(OmegaConf.load(path))
    name = cfg.pop("name")
    shape = {"num_classes": 10, "in_channels": 1, "image_size": 28}
    with torch.device("meta"):  # layers only: no memory, no compute
        from_config, default = create_model(name, **{**cfg, **shape}), create_model(name, **shape)
    assert repr(from_config) == repr(default)  # same layers, dropout and drop-path rates


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
