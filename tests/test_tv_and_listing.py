"""`model=tv` (any torchvision classifier by name) and `imgcls list models` (parameters and MACs of each model).

No test downloads anything: the pretrained path runs against a checkpoint written into a temporary TORCH_HOME,
or against torchvision's weights API with the state dict swapped for one of the right shapes on the meta device.
"""
from __future__ import annotations

import logging
import re
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

import imgcls_cli.models.torchvision_models as tvm  # registers tv (also imported by imgcls_cli.models)
from conftest import assert_ok, assert_user_error, run_in_one_process
from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.engine.inference import model_from_checkpoint
from imgcls_cli.errors import UserError
from imgcls_cli import listing
from imgcls_cli.listing import list_command
from imgcls_cli.models import MODELS, create_model, input_size, normalization

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def build_tv(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("tv", **{"num_classes": 10, "in_channels": 3, "image_size": 32, **kwargs})


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME with no network: a download fails the way it does offline."""
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    return tmp_path


# ============================================================================================ tv: random init
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
@pytest.mark.parametrize("channels", [1, 3])
def test_tv_classifies_1_and_3_channel_images_into_the_dataset_classes(arch, channels):
    model = build_tv(arch=arch, in_channels=channels)
    assert first_conv(model).in_channels == channels
    out = model(torch.randn(4, channels, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_tv_gray_first_conv_sums_the_rgb_filters_so_gray_equals_rgb_copies(arch):
    rgb, gray = build_tv(seed=3, arch=arch).eval(), build_tv(seed=3, arch=arch, in_channels=1).eval()
    assert torch.equal(first_conv(gray).weight, first_conv(rgb).weight.sum(dim=1, keepdim=True))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch,head", [("vgg11", "classifier.6"), ("efficientnet_b0", "classifier.1"),
                                       ("squeezenet1_1", "classifier.1")])
def test_tv_heads_have_the_dataset_classes(arch, head):
    model = build_tv(arch=arch, image_size=64)
    layer = model.get_submodule(head)
    assert getattr(layer, "out_features", getattr(layer, "out_channels", None)) == 10
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_tv_passes_torchvision_settings_through_and_names_the_ones_an_arch_lacks():
    assert build_tv(arch="efficientnet_b0", dropout=0.5).classifier[0].p == 0.5
    with pytest.raises(UserError, match=r"resnet18 takes no model\.dropout"):
        build_tv(arch="resnet18", dropout=0.5)


def test_tv_googlenet_trains_on_one_output():
    model = build_tv(arch="googlenet", image_size=64).train()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)  # not a (logits, aux1, aux2) tuple


def test_tv_unknown_arch_suggests_close_names_and_the_list_command():
    with pytest.raises(UserError) as info:
        build_tv(arch="resnet05")
    message = str(info.value)
    assert "resnet50" in message and "imgcls list models" in message and "\n" not in message


def test_tv_unknown_weights_lists_the_arch_weights():
    with pytest.raises(UserError, match=r"IMAGENET1K_V1.*IMAGENET1K_V2"):
        build_tv(arch="resnet50", weights="IMAGENET")


def test_tv_arch_too_big_for_small_images_asks_for_224_px():
    with pytest.raises(UserError, match=r"alexnet cannot run on 28x28 images .*dataset\.image_size=224"):
        build_tv(arch="alexnet", image_size=28)


# ============================================================================================ tv: pretrained
def test_tv_weights_offline_and_not_cached_is_one_line_naming_the_file_and_folder(torch_home):
    entry = torchvision.models.ResNet18_Weights.DEFAULT
    file_name = entry.url.rsplit("/", 1)[1]
    with pytest.raises(UserError) as info:
        build_tv(arch="resnet18", weights="DEFAULT")
    message = str(info.value)
    folder = torch_home / "hub" / "checkpoints"
    assert "\n" not in message
    for text in (str(folder), file_name, entry.url, "model.weights=null"):
        assert text in message, (text, message)
    assert not (folder / file_name).exists()


def test_tv_weights_from_the_cache_keep_the_backbone_and_get_a_new_head(torch_home, caplog):
    entry = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    torch.manual_seed(7)
    pretrained = torchvision.models.mobilenet_v3_small()
    cached = torch_home / "hub" / "checkpoints" / entry.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(pretrained.state_dict(), cached)

    with caplog.at_level(logging.INFO, logger="imgcls"):
        model = build_tv(arch="mobilenet_v3_small", weights="DEFAULT", in_channels=1, image_size=224)
    assert ("loaded 241 tensors; new (classifier head re-created for 10 classes): classifier.3.weight, "
            "classifier.3.bias; adapted to 1 input channel(s): features.0.0.weight") in caplog.text
    state, reference = model.state_dict(), pretrained.state_dict()
    assert model.classifier[-1].out_features == 10
    assert torch.equal(state["classifier.0.weight"], reference["classifier.0.weight"])  # below the head
    assert torch.equal(state["features.0.0.weight"], reference["features.0.0.weight"].sum(dim=1, keepdim=True))
    assert model(torch.randn(2, 1, 224, 224)).shape == (2, 10)


def test_tv_unreadable_cached_weights_say_to_delete_the_file(torch_home):
    entry = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    cached = torch_home / "hub" / "checkpoints" / entry.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=rf"{re.escape(str(cached))} could not be read.*delete it"):
        build_tv(arch="mobilenet_v3_small", weights="DEFAULT")


@pytest.mark.parametrize("arch", ["vgg11", "efficientnet_b0", "vit_b_16", "squeezenet1_1", "densenet121",
                                  "googlenet", "convnext_tiny", "swin_t", "maxvit_t"])
def test_tv_weights_replace_each_family_head(arch, monkeypatch):
    """torchvision's own builders load a state dict of the pretrained shapes (made on the meta device)."""
    def state_dict_of_the_pretrained_shapes(self: WeightsEnum, *args, **kwargs):
        shapes = {"aux_logits": True, "init_weights": False} if arch in tvm.AUX_ARCHES else {}
        if arch.startswith("vit_"):
            shapes["image_size"] = self.meta["min_size"][0]
        return torchvision.models.get_model(arch, num_classes=len(self.meta["categories"]), **shapes).state_dict()

    fetched = []
    monkeypatch.setattr(WeightsEnum, "get_state_dict",
                        lambda self, *a, **k: fetched.append(self) or state_dict_of_the_pretrained_shapes(self))
    kwargs = {"num_classes": 10, "in_channels": 3, "image_size": 224, "arch": arch, "weights": "DEFAULT"}
    with torch.device("meta"):
        model = create_model("tv", **kwargs)
        out = model.eval()(torch.zeros(1, 3, 224, 224))
        assert len(fetched) == 1
        # What eval and predict build for a checkpoint: the same architecture, with nothing fetched.
        skeleton = create_model("tv", for_checkpoint=True, **kwargs)
    assert len(fetched) == 1
    assert out.shape == (1, 10)
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    assert getattr(last, "out_features", getattr(last, "out_channels", None)) == 10
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(skeleton) == shapes(model)
    assert getattr(skeleton, "transform_input", None) == getattr(model, "transform_input", None)


def test_tv_checkpoint_of_pretrained_weights_loads_offline_with_the_cache_gone(torch_home, tmp_path):
    """eval and predict rebuild a model from the checkpoint alone: the pretrained file is not needed again."""
    entry = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    cached = torch_home / "hub" / "checkpoints" / entry.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), cached)
    kwargs = {"num_classes": 4, "in_channels": 1, "image_size": 64, "arch": "mobilenet_v3_small",
              "weights": "DEFAULT"}
    model = create_model("tv", **kwargs).eval()
    path = tmp_path / "tv.pt"
    save_checkpoint({"model": {"name": "tv", "kwargs": kwargs}, "state_dict": model.state_dict(),
                     "classes": list("abcd"), "input": {"channels": 1, "size": 64, "mean": [0.5], "std": [0.25]},
                     "config": {}, "epoch": 1, "step": 1, "metrics": {}}, path)
    cached.unlink()
    x = torch.randn(3, 1, 64, 64)
    rebuilt = model_from_checkpoint(load_checkpoint(path), torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert not cached.exists()


@pytest.mark.parametrize("arch,weights,size", [("resnet50", "DEFAULT", 224), ("inception_v3", "DEFAULT", 299),
                                               ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", 384)])
def test_tv_weights_bring_their_input_size_and_normalization(arch, weights, size):
    kwargs = {"arch": arch, "weights": weights, "image_size": None}
    assert input_size("tv", kwargs) == size
    mean, std = normalization("tv", kwargs)
    assert len(mean) == len(std) == 3 and all(0 < s < 1 for s in std)
    if arch == "resnet50":
        assert (mean, std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_tv_without_weights_takes_the_dataset_size_and_statistics_unless_image_size_is_set():
    assert input_size("tv", {"arch": "resnet18", "weights": None, "image_size": None}) is None
    assert normalization("tv", {"arch": "resnet18", "weights": None}) is None
    assert input_size("tv", {"arch": "resnet18", "weights": None, "image_size": 96}) == 96


# ============================================================================================ imgcls list models
def macs_by_formula(model: nn.Module, size: int) -> int:
    """Conv: output elements x (in/groups) x kh x kw; linear: in x out. Counted with forward hooks."""
    total = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * module.in_channels // module.groups * kh * kw
        else:
            total += output.numel() * module.in_features

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    return total


def format_macs(macs: float) -> str:
    value, unit = (macs / 1e9, "G") if macs >= 1e9 else (macs / 1e6, "M")
    return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}{unit}"


def markdown_rows(stdout: str) -> dict[str, dict[str, str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {cells[0]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


@pytest.fixture(scope="module")
def listing_runs(tmp_path_factory):
    """`imgcls list models` measures every model (~13 s of CPU): once, with the mistake, through cli.main."""
    base = tmp_path_factory.mktemp("listing")
    return run_in_one_process({"table": (["list", "models"], base), "mistake": (["list", "modelz"], base)})


def test_list_models_prints_parameters_and_macs_at_3x32x32_and_10_classes(listing_runs):
    result = listing_runs["table"]
    assert_ok(result)
    assert "MACs" in result.stdout and "params (M)" in result.stdout
    for name in ("simple_cnn", "resnet"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_channels=3, image_size=32)
        params = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}"
        row = re.search(rf"^\W*{name}\s.*$", result.stdout, re.M)
        assert row and params in row.group(0) and format_macs(macs_by_formula(model, 32)) in row.group(0), name
    assert re.search(r"^\W*resnet\s.*\b11\.17\b", result.stdout, re.M)


def test_list_models_markdown_is_a_table_with_the_same_numbers(listing_runs, monkeypatch, capsys):
    few = [p for p in listing.model_presets() if p.name in ("simple_cnn", "resnet")]
    monkeypatch.setattr(listing, "model_presets", lambda: few)  # every model is measured by the table's run
    assert list_command(["models", "--markdown"]) == 0
    stdout = capsys.readouterr().out
    assert re.search(r"^\| model= \| name \| params \(M\) \| MACs \| input \| note \|$", stdout, re.M)
    assert re.search(r"^\| --- \|", stdout, re.M)
    rows = markdown_rows(stdout)
    assert rows["resnet"]["params (M)"] == "11.17" and rows["resnet"]["input"] == "3x32x32"
    assert re.fullmatch(r"\d+(\.\d+)?[MG]", rows["simple_cnn"]["MACs"])
    table = {name: re.search(rf"^\W*{name}\s.*$", listing_runs["table"].stdout, re.M).group(0)
             for name in ("simple_cnn", "resnet")}
    for name in table:  # the same numbers as the table printed
        assert rows[name]["params (M)"] in table[name] and rows[name]["MACs"] in table[name], (rows[name], table[name])


def test_list_unknown_group_is_one_line(listing_runs):
    assert_user_error(listing_runs["mistake"], "modelz", "models")


def test_list_models_notes_tv_and_a_model_that_fails_instead_of_crashing(monkeypatch, capsys):
    def broken(**kwargs):
        raise ValueError("this model cannot be built")

    monkeypatch.setitem(MODELS._entries, "broken_model", broken)
    few = [p for p in listing.model_presets() if p.name in ("simple_cnn", "tv", "broken_model")]
    monkeypatch.setattr(listing, "model_presets", lambda: few)  # the others cost time and are tested above
    assert list_command(["models", "--markdown"]) == 0
    stdout = capsys.readouterr().out
    rows = markdown_rows(stdout)
    assert "ValueError: this model cannot be built" in rows["broken_model"]["note"]
    assert rows["tv"]["params (M)"] == "" and "model.arch" in rows["tv"]["note"]
    assert "resnet50" in stdout.split("tv model.arch choices:")[1]
