"""`imgcls check`: the Hydra app over conf/check.yaml (the train config plus the check's own keys)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from imgcls_cli.commands.common import command_line, plain, run_command, task_overrides
from imgcls_cli.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="check")
def main(cfg: DictConfig) -> int:
    """Exit status 0 when no finding of a fail_on kind was made, else 1 (a user's mistake: 2)."""
    from imgcls_cli.commands.train import dataset_configs, explicit_keys

    parsed: dict[str, Any] = {}

    def check(cfg: DictConfig) -> None:
        from imgcls_cli.specs.check import CheckSpec  # the same refusals as train, before anything is read

        parsed["spec"] = CheckSpec.parse(plain(cfg), explicit_keys(task_overrides()), dataset_configs())

    def body(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        from imgcls_cli.check.run import run_check  # torch loads after Hydra has checked the arguments

        return run_check(parsed["spec"], run_dir, command=command_line())

    result = run_command(cfg, body, check=check)
    if result and result.get("failed_on"):
        raise SystemExit(1)  # after the last line; the kinds found were said on stderr
    return 0
