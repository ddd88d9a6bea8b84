"""`imgcls export`: the Hydra app over conf/export.yaml."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import require, run_command
from imgcls_cli.paths import CONF_DIR


def _export(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from imgcls_cli.export.run import run_export  # torch loads after Hydra has checked the arguments
    from imgcls_cli.specs.export import ExportSpec

    return run_export(ExportSpec.parse(cfg), run_dir)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    usage = "imgcls export checkpoint=PATH [format=onnx|torch_export|all] [quantize=int8]"
    run_command(cfg, _export, check=lambda c: require(c, "checkpoint", usage=usage))
