"""`imgcls eval`: the Hydra app over conf/eval.yaml."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import require, run_command, task_overrides
from imgcls_cli.paths import CONF_DIR


def _evaluate(cfg: dict[str, Any], run_dir: Path) -> Any:
    # torch loads after Hydra has checked the arguments
    from imgcls_cli.engine.inference import run_eval, run_sweep_eval

    dataset = cfg.get("dataset")
    explicit = [o.split("=", 1)[0].lstrip("+~").removeprefix("dataset.") for o in task_overrides()
                if o.lstrip("+~").startswith("dataset.")]
    options = {"dataset_cfg": dataset, "dataset_keys": explicit, "split": cfg["split"], "device": cfg["device"],
               "precision": cfg["precision"], "batch_size": cfg["batch_size"], "topk": cfg["topk"],
               "num_workers": cfg.get("num_workers", "auto"), "tta": cfg.get("tta", "none"),
               "ensemble": cfg.get("ensemble", "averaging"), "features": cfg.get("features", False)}
    if cfg.get("sweep"):
        return run_sweep_eval(cfg["sweep"], run_dir, **options)
    return run_eval(cfg["checkpoint"], run_dir, **options)


def _check(cfg: DictConfig) -> None:
    if cfg.get("sweep") is None:
        require(cfg, "checkpoint", usage="imgcls eval checkpoint=outputs/train/<run>/checkpoints/best.pt "
                                         "(or a list '[a.pt,b.pt]', a glob, or sweep=<sweep dir>)")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    run_command(cfg, _evaluate, check=_check)
