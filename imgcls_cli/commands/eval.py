"""`imgcls eval`: the Hydra app over conf/eval.yaml."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import require, run_command, task_overrides
from imgcls_cli.paths import CONF_DIR


def _evaluate(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    from imgcls_cli.engine.inference import run_eval  # torch loads after Hydra has checked the arguments

    dataset = cfg.get("dataset")
    explicit = [o.split("=", 1)[0].lstrip("+~").removeprefix("dataset.") for o in task_overrides()
                if o.lstrip("+~").startswith("dataset.")]
    return run_eval(cfg["checkpoint"], run_dir, dataset_cfg=dataset, dataset_keys=explicit, split=cfg["split"],
                    device=cfg["device"], precision=cfg["precision"], batch_size=cfg["batch_size"],
                    topk=cfg["topk"], num_workers=cfg.get("num_workers", "auto"))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    usage = "imgcls eval checkpoint=outputs/train/<run>/checkpoints/best.pt"
    run_command(cfg, _evaluate, check=lambda c: require(c, "checkpoint", usage=usage))
