"""CheckSpec: `imgcls check`'s keys checked once (labels, write_clean, fail_on, check.*), over the TrainSpec of the
same config (so check refuses what train refuses, and labels=true trains the folds with it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from imgcls_cli.errors import UserError, as_float, as_int, shown
from imgcls_cli.specs.train import TrainSpec

FAIL_ON = ("leakage", "duplicates", "label_issues", "unreadable")
FILE_DATASETS = ("imagefolder", "csv")


def _flag(cfg: Mapping[str, Any], key: str) -> bool:
    value = cfg.get(key, False)
    if not isinstance(value, bool):
        raise UserError(f"{key} must be true or false, not {shown(value)}.")
    return value


def _fail_on(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if items is None:
        return ()
    if not isinstance(items, (list, tuple)) or any(not isinstance(i, str) for i in items):
        raise UserError(f"fail_on must be a list of {', '.join(FAIL_ON)}, not {shown(value)}.")
    if unknown := [i for i in items if i not in FAIL_ON]:
        raise UserError(f"fail_on names {', '.join(map(repr, unknown))}; the kinds are {', '.join(FAIL_ON)} "
                        "(e.g. fail_on=[leakage,unreadable]).")
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class CheckSpec:
    """What `imgcls check` looks for and how: the dataset (and, for labels=true, the training recipe) is train's."""

    train: TrainSpec
    labels: bool = False
    write_clean: bool = False
    fail_on: tuple[str, ...] = ()
    folds: int = 5
    oof: str | None = None
    near_distance: int = 7
    near_similarity: float = 0.995
    crop: float = 0.04
    thumbnails: int = 200

    @property
    def seed(self) -> int:
        split_seed = self.train.dataset.split_seed
        return self.train.seed if split_seed is None else split_seed

    @classmethod
    def parse(cls, cfg: dict[str, Any], explicit_keys: list[str] | tuple[str, ...] = (),
              dataset_configs: Mapping[str, dict[str, Any]] | None = None) -> CheckSpec:
        """The check config (plain dicts): the train keys first, then the check's own."""
        train = TrainSpec.parse(cfg, explicit_keys, dataset_configs)
        if train.task.multilabel:
            raise UserError("imgcls check reads one label an image; task=multilabel datasets are not checked (their "
                            "duplicates, leaks and label errors would need label sets throughout).")
        labels, write_clean = _flag(cfg, "labels"), _flag(cfg, "write_clean")
        fail_on = _fail_on(cfg.get("fail_on"))
        own = cfg.get("check") or {}
        folds = as_int(own.get("folds", 5), "check.folds", minimum=2, maximum=100)
        distance = as_int(own.get("near_distance", 7), "check.near_distance", minimum=0, maximum=15)
        similarity = as_float(own.get("near_similarity", 0.995), "check.near_similarity")
        crop = as_float(own.get("crop", 0.04), "check.crop")
        if not 0.0 < similarity <= 1.0:
            raise UserError(f"check.near_similarity must be in (0, 1], not {similarity}.")
        if not 0.0 <= crop < 0.25:
            raise UserError(f"check.crop must be in [0, 0.25), not {crop}.")
        thumbnails = as_int(own.get("thumbnails", 200), "check.thumbnails", minimum=0, maximum=5000)
        if write_clean and train.dataset.name not in FILE_DATASETS:
            raise UserError(f"write_clean=true writes a CSV of image files; dataset '{train.dataset.name}' has no "
                            "files: use dataset=imagefolder or dataset=csv (issues.csv lists its findings by index).")
        oof = own.get("oof")
        return cls(train, labels, write_clean, fail_on, folds, str(oof) if oof else None, distance, similarity,
                   crop, thumbnails)
