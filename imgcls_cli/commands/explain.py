"""`imgcls explain`: the Hydra app over conf/explain.yaml."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import require, run_command
from imgcls_cli.paths import CONF_DIR


def _explain(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from imgcls_cli.explain.run import run_explain  # torch loads after Hydra has checked the arguments
    from imgcls_cli.specs.explain import ExplainSpec

    return run_explain(ExplainSpec.parse(cfg), run_dir)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="explain")
def main(cfg: DictConfig) -> None:
    usage = "imgcls explain checkpoint=PATH inputs=FILE|FOLDER|GLOB|@list [target=predicted|true|CLASS] [method=...]"
    run_command(cfg, _explain, check=lambda c: require(c, "checkpoint", "inputs", usage=usage))
