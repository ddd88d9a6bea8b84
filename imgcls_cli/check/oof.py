"""Out-of-fold predicted probabilities: k-fold training with imgcls's own engine, in this process. Fold f's model
trains on the other folds (with the user's recipe) and scores fold f; every image is so scored by a model that did
not see it. oof_probs.npy keeps them, and oof.json what they were computed from, so that check.oof=PATH reuses them
only for the same data and recipe."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from imgcls_cli.check.listing import Listing
from imgcls_cli.data.splits import stratified_folds
from imgcls_cli.errors import UserError
from imgcls_cli.rundir import write_csv, write_json, write_text_atomic
from imgcls_cli.specs.check import CheckSpec

log = logging.getLogger("imgcls")
OOF, META = "oof_probs.npy", "oof.json"
RECIPE_KEYS = ("model", "optimizer", "schedule", "augment", "epochs", "batch_size", "seed", "label_smoothing",
               "ema", "init", "finetune", "distill")


def check_folds(labels: np.ndarray, folds: int, classes: list[str]) -> None:
    """Every class needs an image in every fold: a class with fewer images than folds is a one-line error."""
    counts = np.bincount(labels, minlength=len(classes))
    small = int(np.argmin(counts))
    if counts[small] < folds:
        raise UserError(f"labels=true with check.folds={folds} needs at least {folds} images of every class, but "
                        f"class '{classes[small]}' has {int(counts[small])}; lower check.folds (at least 2) or add "
                        "images of it.")


def fingerprint(spec: CheckSpec, ids: list[str], labels: np.ndarray) -> str:
    """What the probabilities depend on: the images (ids and labels), the dataset config, the recipe, the folds."""
    cfg = spec.train.config
    recipe = {k: cfg.get(k) for k in RECIPE_KEYS}
    what = {"dataset": cfg.get("dataset"), "recipe": recipe, "folds": spec.folds, "ids": ids,
            "labels": labels.tolist()}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def load_oof(path: str, expected: str, n: int, classes: list[str]) -> np.ndarray:
    """check.oof=PATH's probabilities (PATH: the .npy file or the check's run directory), refused when stale."""
    file = Path(path).expanduser()
    file = file / OOF if file.is_dir() else file
    meta = file.with_name(META)
    if not file.is_file() or not meta.is_file():
        raise UserError(f"check.oof={path}: no {OOF} with its {META} there; give a check run directory of "
                        "labels=true (or its oof_probs.npy), or leave check.oof out to compute them.")
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        probs = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"check.oof={path} cannot be read: {exc}") from None
    if recorded.get("fingerprint") != expected or probs.shape != (n, len(classes)):
        raise UserError(f"check.oof={path} was computed from other images, labels, recipe or folds than this "
                        "check's: it is stale; leave check.oof out to compute them again.")
    log.info(f"out-of-fold probabilities reused from {file}")
    return probs


def save_oof(run_dir: Path, probs: np.ndarray, key: str, ids: list[str], spec: CheckSpec) -> None:
    buffer = io.BytesIO()
    np.save(buffer, probs.astype(np.float32))
    write_text_atomic(run_dir / OOF, buffer.getvalue())
    write_json(run_dir / META, {"fingerprint": key, "folds": spec.folds, "images": len(ids),
                                "recipe": {k: spec.train.config.get(k) for k in RECIPE_KEYS},
                                "dataset": spec.train.config.get("dataset")})


def compute_oof(spec: CheckSpec, items: Listing, pool: np.ndarray, run_dir: Path,
                command: str | None) -> np.ndarray:
    """Train spec.folds models, each on the other folds, and score its own fold: (len(pool), classes)."""
    labels = items.labels[pool]
    probs = np.full((len(pool), len(items.classes)), np.nan, np.float32)
    where = {items.ids[p]: k for k, p in enumerate(pool)}
    for fold, held in enumerate(stratified_folds(labels, spec.folds, spec.seed)):
        log.info(f"fold {fold + 1} of {spec.folds}: training on {len(pool) - len(held)} images, scoring {len(held)}")
        fold_dir = run_dir / "folds" / f"fold_{fold}"
        scored = _train_and_score(spec, items, pool, held, fold_dir, command)
        for sample_id, row in zip(scored.ids, scored.probs):
            probs[where[sample_id]] = row
    return probs


def _train_and_score(spec: CheckSpec, items: Listing, pool: np.ndarray, held: np.ndarray, fold_dir: Path,
                     command: str | None) -> Any:
    """One fold: the other folds train (test: this fold) as `imgcls train` would; then best.pt scores this fold."""
    from imgcls_cli.engine.device import resolve_device, resolve_precision
    from imgcls_cli.engine.inference import score_checkpoint
    from imgcls_cli.engine.train import run_training
    from imgcls_cli.specs.eval import EvalSpec
    from imgcls_cli.specs.train import TrainSpec

    split = np.full(len(pool), "train", dtype=object)
    split[held] = "test"
    assignment = fold_dir / "assignment.csv"
    write_csv(assignment, [{"id": items.ids[p], "split": s} for p, s in zip(pool, split)], ["id", "split"])
    config = copy.deepcopy(spec.train.config)
    config["dataset"].update(splits_file=str(assignment), folds=None, max_eval_samples=None)
    train = TrainSpec.parse(config, spec.train.explicit_keys)
    run_training(train, fold_dir, command=command)
    device = resolve_device(train.device)
    return score_checkpoint(str(fold_dir / "checkpoints" / "best.pt"),
                            EvalSpec(split="test", device=train.device, tta=train.tta), device,
                            resolve_precision(train.precision, device), fold_dir)
