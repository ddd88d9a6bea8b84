"""`imgcls train`: the Hydra app over conf/train.yaml."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import run_command, task_overrides
from imgcls_cli.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The run's best validation accuracy: what a sweeper maximizes (+hparams_search=optuna).

    None when the job failed or diverged (a failed row in the sweep summary): Optuna's sweeper records a failed
    trial for a value that is not a number, and the study goes on.
    """
    from imgcls_cli.engine.train import run_training  # torch loads after Hydra has checked the arguments

    explicit = [o.split("=", 1)[0].lstrip("+~") for o in task_overrides()]
    summary = run_command(cfg, lambda config, run_dir: run_training(config, run_dir, explicit))
    if summary is None or summary.get("status") != "completed":
        return None
    return summary.get("best_val_accuracy")
