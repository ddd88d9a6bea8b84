"""`imgcls eval`: the Hydra app over conf/eval.yaml."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import command_line, require, run_command, task_overrides
from imgcls_cli.paths import CONF_DIR


def _evaluate(cfg: dict[str, Any], run_dir: Path) -> Any:
    # torch loads after Hydra has checked the arguments
    from imgcls_cli.engine.inference import run_eval, run_sweep_eval
    from imgcls_cli.specs.eval import EvalSpec

    explicit = [o.split("=", 1)[0].lstrip("+~").removeprefix("dataset.") for o in task_overrides()
                if o.lstrip("+~").startswith("dataset.")]
    spec = EvalSpec.parse(cfg, explicit)
    return run_sweep_eval(spec, run_dir, command_line()) if spec.sweep else run_eval(spec, run_dir, command_line())


def _check(cfg: DictConfig) -> None:
    if cfg.get("sweep") is None:
        require(cfg, "checkpoint", usage="imgcls eval checkpoint=outputs/train/<run>/checkpoints/best.pt "
                                         "(or a list '[a.pt,b.pt]', a glob, or sweep=<sweep dir>)")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    run_command(cfg, _evaluate, check=_check)
