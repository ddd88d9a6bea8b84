"""EvalSpec: `imgcls eval`'s own keys checked once (checkpoint, split, batch_size, topk, tta, ensemble, features,
num_workers, explain), with the checks that training's test evaluation shares (batch size, topk, tta)."""
from __future__ import annotations

import glob
from dataclasses import dataclass
from typing import Any, Mapping

from imgcls_cli.cores import resolve_workers
from imgcls_cli.data.datasets import SPLITS
from imgcls_cli.errors import UserError, as_int
from imgcls_cli.explain.methods import check_method

MAX_EXPLAIN = 10_000  # explain=N: images of each kind explained (errors, correct)
MAX_BATCH_SIZE = 65536  # images per forward pass: more is a typo, and an allocation no machine has
TTA_VIEWS = {"none": 1, "hflip": 2, "hflip_shift": 4}  # tta= -> the views of each image, the image itself first
ENSEMBLES = ("averaging", "voting")


def check_batch_size(value: Any, key: str = "batch_size") -> int:
    """A batch size as a whole number in 1..MAX_BATCH_SIZE, or a one-line error naming the key."""
    return as_int(value, key, minimum=1, maximum=MAX_BATCH_SIZE)


def check_topk(value: Any) -> int:
    """topk as a whole number >= 1 (more than the classes lists them all), or a one-line error."""
    return as_int(value, "topk", minimum=1)


def check_tta(tta: Any) -> str:
    if tta not in TTA_VIEWS:
        raise UserError(f"tta must be one of {', '.join(TTA_VIEWS)}, not '{tta}'.")
    return tta


def checkpoint_paths(value: Any) -> tuple[str, ...]:
    """checkpoint= as one path, a list of paths, or a glob pattern -> the files, in order."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    paths: list[str] = []
    for item in map(str, items):
        if any(ch in item for ch in "*?["):
            found = sorted(glob.glob(item, recursive=True))
            if not found:
                raise UserError(f"checkpoint={item} matches no file.")
            paths += found
        else:
            paths.append(item)
    if not paths:
        raise UserError("checkpoint= names no file; give a path, a list '[a.pt,b.pt]' or a glob.")
    return tuple(paths)


@dataclass(frozen=True)
class EvalSpec:
    """What `imgcls eval` scores and how: checkpoint files (or a sweep folder's jobs), the split of the dataset
    (None: the checkpoint's own, with the dataset.* keys set on the command line), and the inference settings."""

    checkpoints: tuple[str, ...] = ()  # () with sweep: each job's best.pt
    sweep: str | None = None
    dataset: dict[str, Any] | None = None
    dataset_keys: tuple[str, ...] = ()
    split: str = "test"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None  # None: each checkpoint's eval_batch_size
    topk: int = 5
    num_workers: int = 0
    tta: str = "none"
    ensemble: str = "averaging"
    features: bool = False
    explain: int = 0  # the N most confident errors and N random correct images explained into explain/
    explain_method: str = "gradcam"

    @classmethod
    def parse(cls, cfg: Mapping[str, Any], dataset_keys: list[str] | tuple[str, ...] = ()) -> EvalSpec:
        """The eval config (plain dicts), checked in the order the errors have always come in."""
        split, ensemble = cfg.get("split", "test"), cfg.get("ensemble", "averaging")
        if split not in SPLITS:
            raise UserError(f"split must be one of {', '.join(SPLITS)}, not '{split}'.")
        if ensemble not in ENSEMBLES:
            raise UserError(f"ensemble must be averaging or voting, not '{ensemble}'.")
        tta, topk = check_tta(cfg.get("tta", "none")), check_topk(cfg.get("topk", 5))
        batch_size = cfg.get("batch_size")
        batch_size = None if batch_size is None else check_batch_size(batch_size)
        features = cfg.get("features", False)
        if not isinstance(features, bool):
            raise UserError(f"features must be true or false, not {features!r}.")
        sweep = cfg.get("sweep")
        paths = () if sweep else checkpoint_paths(cfg.get("checkpoint"))
        if features and len(paths) > 1:
            raise UserError(f"features=true writes one model's embeddings; checkpoint= names {len(paths)} files.")
        explain = as_int(cfg.get("explain", 0), "explain", minimum=0, maximum=MAX_EXPLAIN)
        method = check_method(cfg.get("explain_method", "gradcam"))
        return cls(paths, str(sweep) if sweep else None, cfg.get("dataset"), tuple(dataset_keys), split,
                   str(cfg.get("device", "auto")), str(cfg.get("precision", "auto")), batch_size, topk,
                   resolve_workers(cfg.get("num_workers", "auto")), tta, ensemble, features, explain, method)
