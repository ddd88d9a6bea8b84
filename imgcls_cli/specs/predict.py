"""PredictSpec: `imgcls predict`'s keys checked once (checkpoint, inputs, topk, batch_size, num_workers, output)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from imgcls_cli.errors import UserError
from imgcls_cli.specs.eval import check_batch_size, check_topk


@dataclass(frozen=True)
class PredictSpec:
    """Which checkpoint labels which files (inputs: a file, a folder, a glob or @list.txt), and how."""

    checkpoint: str
    inputs: str
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 64
    topk: int = 5
    num_workers: int | str = "auto"  # auto: imgcls_cli.cores.resolve_workers, given the number of files
    output: str | None = None  # None: predictions.csv (and .json) in the run directory

    @classmethod
    def parse(cls, cfg: Mapping[str, Any]) -> PredictSpec:
        """The predict config (plain dicts): topk, then batch_size, then num_workers checked."""
        topk, batch_size = check_topk(cfg.get("topk", 5)), check_batch_size(cfg.get("batch_size", 64))
        workers = cfg.get("num_workers", "auto")
        if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise UserError(f"num_workers must be auto or a whole number >= 0, not {workers!r}.")
        output = cfg.get("output")
        return cls(str(cfg["checkpoint"]), str(cfg["inputs"]), str(cfg.get("device", "auto")),
                   str(cfg.get("precision", "auto")), batch_size, topk, workers, str(output) if output else None)
