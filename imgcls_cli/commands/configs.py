"""The options of a config group, read from conf/<group>/*.yaml as plain values (only commands/ reads configs)."""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from imgcls_cli.paths import CONF_DIR


def option_configs(group: str) -> dict[str, dict[str, Any]]:
    """Config option -> its YAML keys as plain values, in name order."""
    return {path.stem: OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[misc]
            for path in sorted((CONF_DIR / group).glob("*.yaml"))}
