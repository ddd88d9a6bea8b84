"""ExplainSpec: `imgcls explain`'s keys checked once (checkpoint, inputs, target, method, batch_size, device)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from imgcls_cli.errors import UserError, shown
from imgcls_cli.explain.methods import check_method
from imgcls_cli.specs.eval import check_batch_size


@dataclass(frozen=True)
class ExplainSpec:
    """Which checkpoint explains which files (inputs: a file, a folder, a glob or @list.txt), which class of each
    (target: predicted, true, or a class name) and with which method."""

    checkpoint: str
    inputs: str
    target: str = "predicted"
    method: str = "gradcam"
    batch_size: int = 16
    device: str = "auto"

    @classmethod
    def parse(cls, cfg: Mapping[str, Any]) -> ExplainSpec:
        """The explain config (plain dicts): method, then target, then batch_size checked."""
        method = check_method(cfg.get("method", "gradcam"))
        target = cfg.get("target", "predicted")
        target = "true" if target is True else target  # YAML reads target=true as a boolean
        if target is None or isinstance(target, (bool, list, dict)) or str(target) == "":
            raise UserError(f"target must be predicted, true or a class name, not {shown(target)}.")
        batch_size = check_batch_size(cfg.get("batch_size", 16))
        return cls(str(cfg["checkpoint"]), str(cfg["inputs"]), str(target), method, batch_size,
                   str(cfg.get("device", "auto")))
