"""Speed recipes: the resnet9 model, experiment presets (+experiment=NAME) and train's test-time augmentation."""
from __future__ import annotations

import pytest
import torch
import yaml

from conftest import TINY, assert_ok, assert_user_error, read_json, run_in_one_process
from imgcls_cli.data.augment import build_augment
from imgcls_cli.errors import UserError
from imgcls_cli.models import create_model
from imgcls_cli.paths import CONF_DIR
from imgcls_cli.schedule import build_schedule
from imgcls_cli.specs.optimizer import OptimizerSpec
from imgcls_cli.specs.schedule import ScheduleSpec

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_resnet9_is_the_speed_run_layout():
    model = create_model("resnet9", num_classes=10, in_channels=3, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8  # prep, 3 stage convs, 2 residual blocks of 2
    assert [c.out_channels for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    # 6.57M parameters at the published widths, as Page's DAWNBench network
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 6.57
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    assert torch.allclose(model(x) / 0.125, model.fc(model.features(x)))  # the scaled head


def test_resnet9_refuses_bad_widths_and_tiny_images():
    with pytest.raises(UserError, match="model.widths"):
        create_model("resnet9", num_classes=10, widths=[16, 32])
    with pytest.raises(UserError, match="image_size"):
        create_model("resnet9", num_classes=10, image_size=4)


def test_every_preset_opens_with_its_measurement_and_names_a_global_package():
    assert "digits_fast" in EXPERIMENTS
    for name in EXPERIMENTS:
        text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_\n"), name
        assert "Measured:" in text.split("defaults:")[0], name  # the header states time, accuracy and machine


def test_presets_compose_and_digits_fast_trains_with_tta(tmp_path):
    runs = run_in_one_process({
        **{f"cfg_{name}": (["train", f"+experiment={name}", "--cfg", "job"], tmp_path) for name in EXPERIMENTS},
        "run": (["train", "+experiment=digits_fast", "epochs=1", "tta=hflip", f"hydra.run.dir={tmp_path / 'r'}"],
                tmp_path),
        "bad_tta": (["train", *TINY, "tta=rotate"], tmp_path),
    })
    for name in EXPERIMENTS:  # every preset composes, and its parts build as training builds them
        assert_ok(runs[f"cfg_{name}"])
        cfg = yaml.safe_load(runs[f"cfg_{name}"].stdout)
        build_augment(cfg["augment"])
        OptimizerSpec.parse(cfg["optimizer"])
        build_schedule(ScheduleSpec.parse(cfg["schedule"]), cfg["epochs"])
        model_kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
        create_model(cfg["model"]["name"], num_classes=10, in_channels=cfg["dataset"]["channels"],
                     image_size=cfg["dataset"]["image_size"], **model_kwargs)
        assert cfg["tta"] in ("none", "hflip", "hflip_shift")
    cfg = yaml.safe_load(runs["cfg_digits_fast"].stdout)
    assert cfg["model"]["name"] == "resnet9" and cfg["optimizer"]["name"] == "sgd"
    assert cfg["schedule"]["name"] == "onecycle" and cfg["dataset"]["image_size"] == 16
    assert_ok(runs["run"])
    metrics = read_json(tmp_path / "r" / "eval" / "metrics.json")
    assert metrics["tta"] == "hflip" and metrics["accuracy"] > 0.5
    assert_user_error(runs["bad_tta"], "tta", "rotate")
