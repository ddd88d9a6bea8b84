"""`imgcls predict`: the Hydra app over conf/predict.yaml."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import require, run_command
from imgcls_cli.paths import CONF_DIR


def _predict(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from imgcls_cli.engine.predict import run_predict  # torch loads after Hydra has checked the arguments
    from imgcls_cli.specs.predict import PredictSpec

    return run_predict(PredictSpec.parse(cfg), run_dir)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    usage = "imgcls predict checkpoint=PATH inputs=FILE|FOLDER|GLOB"
    run_command(cfg, _predict, check=lambda c: require(c, "checkpoint", "inputs", usage=usage))
