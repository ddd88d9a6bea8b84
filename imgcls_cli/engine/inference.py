"""Models from checkpoints, and `imgcls eval`: a checkpoint scored on a dataset split."""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls_cli import console as out
from imgcls_cli.checkpoint import load_checkpoint
from imgcls_cli.data.datasets import SPLITS, load_dataset
from imgcls_cli.data.loader import StreamLoader, make_loader, read_ids, resolve_workers
from imgcls_cli.engine.device import (auto_precision_for_model, autocast, resolve_device, resolve_precision,
                                      use_channels_last)
from imgcls_cli.engine.eval_data import (MISSING, SEEN, Unread, check_splits_file, class_mapping, eval_keys, few,
                                         seen_keys, splits_beside, unread_of_run_split)
from imgcls_cli.engine.reports import write_eval_reports, write_skipped_files
from imgcls_cli.errors import UserError, as_int
from imgcls_cli.models import MODELS, create_model
from imgcls_cli.models.heads import captured_embeddings, head_name
from imgcls_cli.rundir import write_csv, write_text_atomic

log = logging.getLogger("imgcls")
# Dataset keys that choose the splits: set on the eval command line, they win over the run's splits.csv.
SPLIT_KEYS = {"root", "file", "val_fraction", "test_fraction", "folds", "fold", "splits_file"}
MAX_BATCH_SIZE = 65536  # images per forward pass: more is a typo, and an allocation no machine has


def check_batch_size(value: Any, key: str = "batch_size") -> int:
    """A batch size as a whole number in 1..MAX_BATCH_SIZE, or a one-line error naming the key."""
    return as_int(value, key, minimum=1, maximum=MAX_BATCH_SIZE)


def check_topk(value: Any) -> int:
    """topk as a whole number >= 1 (more than the classes lists them all), or a one-line error."""
    return as_int(value, "topk", minimum=1)


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> nn.Module:
    """Rebuild the registered model with its saved kwargs and load the weights (eval mode)."""
    spec = ckpt["model"]
    if not isinstance(spec, dict) or spec.get("name") not in MODELS:
        raise UserError(f"the checkpoint names a model this imgcls does not have: {spec.get('name')!r}.")
    model = create_model(spec["name"], for_checkpoint=True, **spec.get("kwargs", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"the checkpoint's weights do not fit model '{spec['name']}': {first}") from None
    return model.to(device).eval()


def dataset_for_checkpoint(ckpt: dict[str, Any], dataset_cfg: dict[str, Any] | None,
                           dataset_keys: list[str] | None = None,
                           checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The dataset config to evaluate on, converted to the checkpoint's input channels and size.

    The checkpoint's own dataset keeps its training settings (split fractions, seed) except the keys the user
    set (dataset_keys), so split=test is the same test split; another dataset comes as configured.
    """
    trained = ckpt["config"].get("dataset")
    if not isinstance(trained, dict):
        if not dataset_cfg or not dataset_cfg.get("name"):
            raise UserError(f"{checkpoint or 'the checkpoint'} records no dataset it was trained on: give the dataset "
                            "to evaluate on (dataset=NAME).")
        trained = {}
    # +dataset.KEY=VALUE alone (no dataset=NAME) changes a key of the checkpoint's own dataset.
    same = not dataset_cfg or dataset_cfg.get("name", trained.get("name")) == trained.get("name")
    if dataset_cfg is None:
        cfg = dict(trained)
    elif same:
        cfg = {**trained, **{k: dataset_cfg[k] for k in (dataset_keys or []) if k in dataset_cfg}}
    else:
        cfg = dict(dataset_cfg)
    cfg["channels"], cfg["image_size"] = ckpt["input"]["channels"], ckpt["input"]["size"]
    # The training run's splits.csv: the same images in each split, even where files were added since.
    splits_file = splits_beside(checkpoint) if checkpoint else None
    if same and splits_file and splits_file.is_file() and not set(dataset_keys or []) & SPLIT_KEYS:
        check_splits_file(splits_file)
        cfg["splits_file"] = str(splits_file)
    return cfg


TTA_VIEWS = {"none": 1, "hflip": 2, "hflip_shift": 4}  # tta= -> the views of each image, the image itself first
TTA_CHOICES = tuple(TTA_VIEWS)


def check_tta(tta: str) -> str:
    if tta not in TTA_VIEWS:
        raise UserError(f"tta must be one of {', '.join(TTA_CHOICES)}, not '{tta}'.")
    return tta
ENSEMBLES = ("averaging", "voting")


@dataclass
class Scored:
    """One checkpoint's probabilities on a split, with what is needed to report them."""

    checkpoint: str
    ckpt: dict[str, Any]
    probs: np.ndarray  # columns in the order of the classes (an ensemble's: its first member's)
    targets: np.ndarray
    ids: list[str]
    id_column: str
    dataset: str
    images: np.ndarray | None = None  # uint8 (N, C, H, W) when the split is in memory: for misclassified.png
    features: np.ndarray | None = None  # (N, D) float32 embeddings, with features=true
    keys: list[str] | None = None  # what identifies each scored image across datasets (eval_data.eval_keys)
    seen: set[str] = field(default_factory=set)  # keys of the images this checkpoint learned from
    seen_from: str = ""  # the splits.csv that says so
    unread: Unread | None = None  # where the run's own split is scored: its images that could not be
    name: str = ""
    split: str = ""

    def keep(self, mask: np.ndarray) -> None:
        """Only the rows where mask is true."""
        self.probs, self.targets = self.probs[mask], self.targets[mask]
        self.ids = [i for i, m in zip(self.ids, mask) if m]
        self.keys = [k for k, m in zip(self.keys or [], mask) if m]
        self.images = self.images[mask] if self.images is not None else None
        self.features = self.features[mask] if self.features is not None else None
        self.dataset = f"{self.name} ({self.split}, {len(self.probs)} images)"


@torch.inference_mode()
def predict_probs(model: nn.Module, loader: Any, amp: Any, tta: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (and targets) on the CPU; with test-time augmentation, the mean over the views:
    hflip: the image and its mirror; hflip_shift: those and the image shifted by 1/16 of its size both ways."""
    check_tta(tta)
    model.eval()
    probs, targets = [], []
    for x, y in loader:
        views = [x] if tta == "none" else [x, x.flip(-1)]
        if tta == "hflip_shift":
            s = max(1, x.shape[-1] // 16)
            views += [_shifted(x, s), _shifted(x, -s)]
        total = None
        for view in views:
            with amp():
                p = torch.softmax(model(view).float(), 1)
            total = p if total is None else total + p
        probs.append(total / len(views))
        targets.append(y)
    if not probs:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    return torch.cat(probs).cpu(), torch.cat(targets).cpu()


def _shifted(x: torch.Tensor, s: int) -> torch.Tensor:
    """x moved by s pixels down and right (s < 0: up and left), zero (the mean, after normalization) filled."""
    out = torch.zeros_like(x)
    if s > 0:
        out[..., s:, s:] = x[..., :-s, :-s]
    else:
        out[..., :s, :s] = x[..., -s:, -s:]
    return out


def checkpoint_paths(spec: Any) -> list[str]:
    """checkpoint= as one path, a list of paths, or a glob pattern -> the files, in order."""
    import glob

    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
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
    return paths


def score_checkpoint(checkpoint: str, *, split: str, dataset_cfg: dict[str, Any] | None, dataset_keys: list[str],
                     dev: torch.device, prec: str, batch_size: int | None, num_workers: Any, tta: str,
                     precision: str = "auto", features: bool = False,
                     run_dir: Path, like: Scored | None = None) -> Scored:
    """Probabilities of one checkpoint on a split, with the keys of the images it learned from (Scored.seen).
    `like`: an ensemble's first member, whose input and images this one must share and whose class order its
    probabilities take (the same class names, in any order)."""
    ckpt = load_checkpoint(checkpoint)
    train_cfg = ckpt["config"]
    size = check_batch_size(batch_size) if batch_size is not None else \
        check_batch_size(train_cfg.get("eval_batch_size", 256), f"the eval_batch_size of {checkpoint}")
    ref, ref_path = (like.ckpt, like.checkpoint) if like is not None else (ckpt, checkpoint)
    classes, ref_classes = [str(c) for c in ckpt["classes"]], [str(c) for c in ref["classes"]]
    if like is not None:
        if set(classes) != set(ref_classes):
            parts = [f"{path} has {few([c for c in have if c not in other])}" for path, have, other in
                     ((checkpoint, classes, ref_classes), (like.checkpoint, ref_classes, classes))
                     if set(have) - set(other)]
            raise UserError(f"ensemble members differ in classes ({' and '.join(parts)} that the other has not); "
                            "ensemble checkpoints trained on the same classes (in any order) and input.")
        of = lambda c: [c["input"]["channels"], c["input"]["size"]]  # noqa: E731
        if of(ckpt) != of(like.ckpt):
            raise UserError(f"ensemble members differ in input channels and size: {checkpoint} has {of(ckpt)}, "
                            f"{like.checkpoint} has {of(like.ckpt)}; ensemble checkpoints trained on the same "
                            "classes and input.")
    model = model_from_checkpoint(ckpt, dev)
    prec = auto_precision_for_model(prec, precision, dev, model)  # as training chose it: the same numbers
    ds_cfg = dataset_for_checkpoint(ref, dataset_cfg, dataset_keys, ref_path)
    seed = int(ref["config"].get("seed", 0))
    bundle = load_dataset(ds_cfg, seed)
    # The dataset's labels as the reference's class indices, matched by name; this model's outputs likewise.
    mapping = class_mapping(bundle.classes, ref_classes, bundle.name, ref_path)
    columns = None if classes == ref_classes else [classes.index(c) for c in ref_classes]
    data = bundle.splits[split]
    run, seen = seen_keys(checkpoint, ckpt, ds_cfg, seed, split, bundle.id_column)
    unread = None
    if run is not None and ds_cfg.get("splits_file") and Path(ds_cfg["splits_file"]).resolve() == run.path:
        present = {i for i, s in bundle.split_table if s == split}  # before any max_eval_samples subset
        unread = unread_of_run_split(run, split, present, bundle.skipped, ds_cfg)
    skipped = [*bundle.skipped, *(e for e in (unread.entries if unread else []) if e[1] == MISSING)]
    if len(data) == 0:
        if unread is not None and unread.total:
            _write_skipped(run_dir, skipped)
            raise UserError(f"none of the {unread.total} {split} images of the run could be read (missing or "
                            f"undecodable): listed in {run_dir / 'skipped_files.txt'}; restore them, or evaluate "
                            "another split= or dataset=.")
        raise UserError(f"the {split} split of dataset '{bundle.name}' is empty; choose another split=.")
    inp = ckpt["input"]
    channels_last = use_channels_last(train_cfg.get("channels_last", "auto"), dev)  # as in training: same numbers
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    labels = data.labels if mapping is None else torch.from_numpy(mapping)[data.labels]
    loader = make_loader(data.images, labels, size, inp["mean"], inp["std"], device=dev,
                         num_workers=resolve_workers(num_workers), channels_last=channels_last)
    with (captured_embeddings(model, head_name(model, len(ckpt["classes"]))) if features
          else contextlib.nullcontext()) as captured:
        probs, targets = predict_probs(model, loader, lambda: autocast(dev, prec), tta)
    if columns is not None:
        probs = probs[:, columns]
    found = None
    if captured is not None:  # the embeddings of each batch's first view, the images themselves
        found = torch.cat([f.float().cpu() for f in captured[::TTA_VIEWS[tta]]]).numpy()
    if isinstance(loader, StreamLoader) and loader.skipped:  # files that stopped decoding since training
        skipped += sorted(loader.skipped.items())
        if unread is not None:
            unread = Unread(unread.total, [*unread.entries, *sorted(loader.skipped.items())])
    if like is None:  # an ensemble's members read the same files: said once
        _write_skipped(run_dir, skipped, unread, split)
    if len(probs) == 0:
        raise UserError(f"none of the {len(data)} {split} images of dataset '{bundle.name}' could be read: listed in "
                        f"{run_dir / 'skipped_files.txt'}.")
    ids = read_ids(loader, data.ids)
    return Scored(str(checkpoint), ckpt, probs.numpy(), targets.numpy(), ids, bundle.id_column,
                  f"{bundle.name} ({split}, {len(ids)} images)", data.images.numpy() if data.in_memory else None,
                  found, keys=eval_keys(ids, bundle.id_column, ds_cfg), seen=seen,
                  seen_from=str(run.path) if run is not None else "", unread=unread, name=bundle.name, split=split)


def _write_skipped(run_dir: Path, skipped: list[tuple[str, str]], unread: Unread | None = None,
                   split: str = "") -> None:
    """skipped_files.txt; where the run's own split is scored, a warning counting its images that could not be
    read, else the warning of files that did not decode."""
    if unread is None or not unread.entries:
        write_skipped_files(run_dir, skipped, log)
        return
    write_text_atomic(Path(run_dir) / "skipped_files.txt", "".join(f"{path}\t{why}\n" for path, why in skipped))
    log.warning(f"{len(unread.entries)} of {unread.total} {split} images of the run could not be read (missing or "
                f"undecodable): listed in skipped_files.txt")


def combine(members: list[Scored], method: str) -> np.ndarray:
    """averaging: the mean softmax. voting: each member's top class is a vote; the output is the vote share,
    a tie going to the class with the highest mean probability."""
    if method not in ENSEMBLES:
        raise UserError(f"ensemble must be averaging or voting, not '{method}'.")
    mean = np.mean([m.probs for m in members], axis=0)
    if method == "averaging":
        return mean
    k = mean.shape[1]
    votes = np.mean([np.eye(k)[m.probs.argmax(1)] for m in members], axis=0)
    winner = np.argmax(votes + 1e-6 * mean, axis=1)  # mean probabilities only ever decide between tied votes
    share = votes.copy()
    share[np.arange(len(share)), winner] += 1e-9  # so the reported label is the tie-break's
    return share / share.sum(1, keepdims=True)


def _report(scored: Scored, probs: np.ndarray, out_dir: Path, split: str, topk: int, extra: dict[str, Any]
            ) -> dict[str, Any]:
    return write_eval_reports(out_dir, probs, scored.targets, list(scored.ckpt["classes"]), scored.ids,
                              scored.id_column, topk, extra={"split": split, **extra}, images=scored.images)


def run_eval(
    checkpoint: Any,
    run_dir: str | Path,
    *,
    dataset_cfg: dict[str, Any] | None = None,
    dataset_keys: list[str] | None = None,
    split: str = "test",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    topk: int = 5,
    num_workers: Any = "auto",
    tta: str = "none",
    ensemble: str = "averaging",
    features: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint (or several, and their ensemble) on a split; write the reports into run_dir.

    Images any of the checkpoints learned from (their runs' splits.csv) are left out, where the split is not the
    run's own; metrics.json counts them (excluded_seen), and the run's images that could not be read
    (missing_files)."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, not '{split}'.")
    if ensemble not in ENSEMBLES:
        raise UserError(f"ensemble must be averaging or voting, not '{ensemble}'.")
    check_tta(tta)
    topk = check_topk(topk)
    if batch_size is not None:
        batch_size = check_batch_size(batch_size)
    if not isinstance(features, bool):
        raise UserError(f"features must be true or false, not {features!r}.")
    run_dir = Path(run_dir)
    paths = checkpoint_paths(checkpoint)
    if features and len(paths) > 1:
        raise UserError(f"features=true writes one model's embeddings; checkpoint= names {len(paths)} files.")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    args = {"split": split, "dataset_cfg": dataset_cfg, "dataset_keys": dataset_keys or [], "dev": dev,
            "prec": prec, "precision": precision, "batch_size": batch_size, "num_workers": num_workers, "tta": tta,
            "run_dir": run_dir, "features": features}
    first = score_checkpoint(paths[0], **args)
    members = [first] + [score_checkpoint(p, like=first, **args) for p in paths[1:]]
    trust = leave_out_seen(members, split)
    if len(paths) == 1:
        metrics = _report(first, first.probs, run_dir, split, topk,
                          {"checkpoint": first.checkpoint, "epoch": first.ckpt.get("epoch"), "tta": tta, **trust})
        rows = [("checkpoint", first.checkpoint), ("dataset", first.dataset)]
        if first.features is not None:
            write_features(run_dir, first)
            rows.append(("features.npy", f"{first.features.shape[0]} x {first.features.shape[1]}"))
        rows += [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "num_samples"]
        rows += [(k, v) for k, v in trust.items() if v]
        out.show(out.table("Evaluation", ["metric", "value"], rows))
        return {**metrics, **trust}
    table = []
    for i, member in enumerate(members):
        m = _report(member, member.probs, run_dir / "members" / f"{i}", split, topk,
                    {"checkpoint": member.checkpoint, "epoch": member.ckpt.get("epoch"), "tta": tta, **trust})
        table.append({"member": str(i), "checkpoint": member.checkpoint, **m})
    metrics = _report(first, combine(members, ensemble), run_dir, split, topk,
                      {"ensemble": ensemble, "members": [m.checkpoint for m in members], "tta": tta, **trust})
    table.append({"member": f"ensemble ({ensemble})", "checkpoint": f"{len(members)} members", **metrics})
    columns = ["member", "checkpoint", "accuracy", f"top{topk}_accuracy", "f1_macro", "loss"]
    write_csv(run_dir / "members.csv", table, columns)
    out.show(out.table(f"Ensemble of {len(members)} on {first.dataset}", columns,
                       [[row.get(c) for c in columns] for row in table]))
    return {**metrics, **trust}


def leave_out_seen(members: list[Scored], split: str) -> dict[str, int]:
    """Drop, from every member's rows, the images any member learned from (all members keep the same rows);
    metrics.json's counts: excluded_seen, and missing_files where the run's own split was scored."""
    first = members[0]
    for member in members[1:]:
        if member.ids != first.ids:
            raise UserError(f"ensemble members scored different images ({member.checkpoint}: {len(member.ids)}, "
                            f"{first.checkpoint}: {len(first.ids)}); evaluate them one at a time.")
    counts = {"excluded_seen": 0}
    if first.unread is not None:
        counts["missing_files"] = len(first.unread.entries)
    seen = set().union(*(m.seen for m in members))
    if not seen:
        return counts
    keep = np.array([k not in seen for k in first.keys or []], dtype=bool)
    excluded = int((~keep).sum())
    counts["excluded_seen"] = excluded
    sources = ", ".join(sorted({m.seen_from for m in members if m.seen}))
    what = " or ".join(SEEN[split]).replace("train", "trained").replace("val", "validated")
    if excluded == len(keep):
        raise UserError(f"all {excluded} {split} images of {first.name} are images the checkpoint was {what} on "
                        f"(by {sources}); evaluate the run's own split (without dataset.* keys that change it) "
                        "or another dataset.")
    if excluded:
        for member in members:
            member.keep(keep)
    log.info(f"left out {excluded} of {len(keep)} {split} images that the checkpoint was {what} on (by "
             f"{sources}): {len(first.probs)} images scored")
    return counts


def write_features(run_dir: Path, scored: Scored) -> None:
    """features.npy (N x D float32) and labels.npy (N int64), rows in predictions.csv's order."""
    for name, array in (("features.npy", scored.features), ("labels.npy", scored.targets.astype(np.int64))):
        buffer = io.BytesIO()
        np.save(buffer, array)
        write_text_atomic(run_dir / name, buffer.getvalue())
    log.info(f"features: {scored.features.shape[0]} x {scored.features.shape[1]} embeddings in "
             f"{run_dir / 'features.npy'}, labels in labels.npy")


def run_sweep_eval(sweep: str | Path, run_dir: str | Path, **kwargs: Any) -> list[dict[str, Any]]:
    """Every job's best checkpoint of a sweep on its test split: a leaderboard, best first."""
    import yaml

    sweep, run_dir = Path(sweep), Path(run_dir)
    jobs = sorted(sweep.glob("*/checkpoints/best.pt"))
    if not jobs:
        raise UserError(f"sweep={sweep}: no <job>/checkpoints/best.pt in it; give a folder that imgcls train -m "
                        "wrote.")
    board = []
    for best in jobs:
        job = best.parent.parent
        metrics = run_eval(str(best), run_dir / job.name, **kwargs)
        overrides = job / ".hydra" / "overrides.yaml"
        board.append({"job": job.name.split("_", 1)[0],
                      "overrides": ",".join(yaml.safe_load(overrides.read_text()) or []) if overrides.is_file()
                      else "", **metrics, "checkpoint": str(best)})
    board.sort(key=lambda r: -r["accuracy"])
    topk = kwargs.get("topk", 5)
    columns = ["job", "overrides", "accuracy", f"top{topk}_accuracy", "f1_macro", "loss", "checkpoint"]
    write_csv(run_dir / "leaderboard.csv", board, columns)
    out.show(out.table(f"Leaderboard: {len(board)} jobs of {sweep}", columns[:-1],
                       [[r.get(c) for c in columns[:-1]] for r in board]))
    return board
