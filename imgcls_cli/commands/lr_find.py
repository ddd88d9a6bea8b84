"""`imgcls lr_find`: the Hydra app over conf/lr_find.yaml (train.yaml's groups and keys, and lr_find.*). It prints
the suggested optimizer.lr; the run directory holds lr_find.csv and lr_find.png, and nothing else is changed."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import run_command, task_overrides
from imgcls_cli.commands.train import explicit_keys, parse
from imgcls_cli.errors import UserError
from imgcls_cli.paths import CONF_DIR

log = logging.getLogger("imgcls")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="lr_find")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    """The results (lr_find.json's content): the suggested lr and the range that was swept."""
    from imgcls_cli.engine.lr_find import RangeSpec, range_test, summary, write_results  # torch loads after Hydra

    parsed: dict[str, Any] = {}

    def check(cfg: DictConfig) -> None:
        parsed["options"] = RangeSpec.parse(dict(cfg.get("lr_find") or {}))
        parsed["spec"], _ = parse(cfg, explicit_keys(task_overrides()))
        for key in ("init", "resume"):
            if parsed["spec"].config.get(key):
                raise UserError(f"lr_find starts from the model's initial weights: {key}= is not taken here.")

    def find(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        result = range_test(parsed["spec"], parsed["options"])
        write_results(result, parsed["options"], run_dir)
        found = summary(result, parsed["options"])
        if result.suggested_lr is None:
            print("no suggestion: the loss did not fall between lr_find.min_lr and lr_find.max_lr; widen the range "
                  "(see lr_find.png)")
        else:
            print(f"Suggested: optimizer.lr={result.suggested_lr:.3g}  (steepest descent of the smoothed loss; "
                  f"{'diverged' if result.diverged else 'did not diverge'} at lr {result.lrs[-1]:.3g})")
        return found

    return run_command(cfg, find, check=check)
