"""Models from checkpoints, and `imgcls eval`: checkpoints scored on a dataset split (one, an ensemble of several,
or every job of a sweep)."""
from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgcls_cli import console as out
from imgcls_cli.data.datasets import DatasetBundle, Split, load_dataset
from imgcls_cli.data.loader import StreamLoader, make_loader, read_ids
from imgcls_cli.engine.device import resolve_device, resolve_precision
from imgcls_cli.engine.ensemble import Scored, check_member, combine, leave_out_seen
from imgcls_cli.engine.eval_data import (MISSING, RunSplits, Unread, check_splits_file, class_mapping, eval_keys,
                                         run_checkpoint, seen_keys, splits_beside, unread_of_run_split)
from imgcls_cli.engine import labelsets
from imgcls_cli.engine.eval_report import finish_eval
from imgcls_cli.engine.labelsets import is_multilabel
from imgcls_cli.engine.predictor import predict, prepare
from imgcls_cli.engine.reports import result_columns, write_eval_reports, write_skipped_files
from imgcls_cli.errors import UserError
from imgcls_cli.explain.evaluate import check_explain, write_eval_explanations
from imgcls_cli.export.runtime import ExportedModel, load_for_inference
from imgcls_cli.export.runtime import model_from_checkpoint  # noqa: F401  (distill's and the tests' import path)
from imgcls_cli.models.heads import head_name
from imgcls_cli.rundir import write_csv, write_text_atomic
from imgcls_cli.specs.eval import EvalSpec, check_batch_size, check_tta  # noqa: F401  (check_tta: train.py's)
from imgcls_cli.tasks import task_of

log = logging.getLogger("imgcls")
# Dataset keys that choose the splits: set on the eval command line, they win over the run's splits.csv.
SPLIT_KEYS = {"root", "file", "val_fraction", "test_fraction", "folds", "fold", "splits_file"}


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
    # The training run's splits.csv: the same images in each split, even where files were added since (for an
    # exported model, the run of the checkpoint it was exported from).
    splits_file = splits_beside(run_checkpoint(checkpoint, ckpt)) if checkpoint else None
    if same and splits_file and splits_file.is_file() and not set(dataset_keys or []) & SPLIT_KEYS:
        check_splits_file(splits_file)
        cfg["splits_file"] = str(splits_file)
    return cfg


@dataclass
class EvalImages:
    """The split a checkpoint is scored on: its images and labels (as the reference checkpoint's class indices),
    the run's splits (what the checkpoint learned from: seen) and what could not be read."""

    bundle: DatasetBundle
    cfg: dict[str, Any]
    data: Split
    labels: torch.Tensor
    run: RunSplits | None
    seen: set[str]
    unread: Unread | None
    skipped: list[tuple[str, str]]


def eval_images(checkpoint: str, ckpt: dict[str, Any], ref: dict[str, Any], ref_path: str, spec: EvalSpec,
                run_dir: Path) -> EvalImages:
    """The eval's split of the dataset (ref: the checkpoint whose dataset and classes are the reference, an
    ensemble's first member), or a one-line error when it has no image to score."""
    ds_cfg = dataset_for_checkpoint(ref, spec.dataset, list(spec.dataset_keys), ref_path)
    seed = int(ref["config"].get("seed", 0))
    bundle = load_dataset(ds_cfg, seed, task=ref.get("task") or "multiclass")
    # The dataset's labels as the reference's class indices, matched by name.
    mapping = class_mapping(bundle.classes, [str(c) for c in ref["classes"]], bundle.name, ref_path)
    split = spec.split
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
    labels = data.labels if mapping is None else remap(data.labels, torch.from_numpy(mapping))
    return EvalImages(bundle, ds_cfg, data, labels, run, seen, unread, skipped)


def remap(labels: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """A dataset's labels as the checkpoint's class indices (mapping: dataset index -> checkpoint index); multi-hot
    labels have their columns moved."""
    if labels.ndim == 1:
        return mapping[labels]
    moved = torch.zeros_like(labels)
    moved[:, mapping] = labels
    return moved


def score_checkpoint(checkpoint: str, spec: EvalSpec, dev: torch.device, prec: str, run_dir: Path,
                     like: Scored | None = None) -> Scored:
    """Probabilities of one checkpoint on the spec's split, with the keys of the images it learned from
    (Scored.seen). `like`: an ensemble's first member, whose input and images this one must share and whose
    class order its probabilities take (the same class names, in any order)."""
    ckpt, model = load_for_inference(checkpoint, dev)
    if spec.features and isinstance(model, ExportedModel):
        raise UserError(f"features=true needs the .pt checkpoint: {checkpoint} is an exported model, whose graph "
                        "gives the logits alone (no embeddings).")
    size = spec.batch_size if spec.batch_size is not None else \
        check_batch_size(ckpt["config"].get("eval_batch_size", 256), f"the eval_batch_size of {checkpoint}")
    if like is not None:
        check_member(checkpoint, ckpt, like)
    ref, ref_path = (like.ckpt, like.checkpoint) if like is not None else (ckpt, checkpoint)
    # channels_last and precision as in training: the numbers validation gave
    model, amp, channels_last = prepare(model, ckpt["config"], dev, spec.precision, prec)
    images = eval_images(checkpoint, ckpt, ref, ref_path, spec, run_dir)
    inp, data = ckpt["input"], images.data
    loader = make_loader(data.images, images.labels, size, inp["mean"], inp["std"], device=dev,
                         num_workers=spec.num_workers, channels_last=channels_last)
    head = head_name(model, len(ckpt["classes"])) if spec.features else None
    result = predict(model, loader, amp, tta=spec.tta, head=head,
                     activation=task_of(ckpt.get("task")).activation)
    classes, ref_classes = [str(c) for c in ckpt["classes"]], [str(c) for c in ref["classes"]]
    probs = result.outputs  # this model's outputs in the reference's class order
    if classes != ref_classes and len(probs):
        probs = probs[:, [classes.index(c) for c in ref_classes]]
    skipped, unread = images.skipped, images.unread
    if isinstance(loader, StreamLoader) and loader.skipped:  # files that stopped decoding since training
        skipped += sorted(loader.skipped.items())
        if unread is not None:
            unread = Unread(unread.total, [*unread.entries, *sorted(loader.skipped.items())])
    if like is None:  # an ensemble's members read the same files: said once
        _write_skipped(run_dir, skipped, unread, spec.split)
    name = images.bundle.name
    if len(probs) == 0:
        raise UserError(f"none of the {len(data)} {spec.split} images of dataset '{name}' could be read: listed in "
                        f"{run_dir / 'skipped_files.txt'}.")
    ids, id_column = read_ids(loader, data.ids), images.bundle.id_column
    store_rows = None if data.in_memory else np.array(
        [p for p in range(len(data)) if not isinstance(loader, StreamLoader) or loader.store.name(p) not in
         loader.skipped], dtype=np.int64)
    return Scored(str(checkpoint), ckpt, probs.numpy(), result.targets.numpy(), ids, id_column,
                  f"{name} ({spec.split}, {len(ids)} images)", data.images.numpy() if data.in_memory else None,
                  result.features, keys=eval_keys(ids, id_column, images.cfg), seen=images.seen,
                  seen_from=str(images.run.path) if images.run is not None else "", unread=unread, name=name,
                  split=spec.split, dataset_config=images.cfg,
                  store=None if data.in_memory else data.images, store_rows=store_rows)


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


def _report(scored: Scored, probs: np.ndarray, out_dir: Path, split: str, topk: int, extra: dict[str, Any]
            ) -> dict[str, Any]:
    if is_multilabel(scored.ckpt):
        return labelsets.write_reports(out_dir, probs, scored.targets, list(scored.ckpt["classes"]),
                                       scored.ckpt["thresholds"], scored.ids, scored.id_column, topk,
                                       {"split": split, **extra})
    return write_eval_reports(out_dir, probs, scored.targets, list(scored.ckpt["classes"]), scored.ids,
                              scored.id_column, topk, extra={"split": split, **extra}, images=scored.images)


def run_eval(spec: EvalSpec, run_dir: str | Path, command: str | None = None) -> dict[str, Any]:
    """Evaluate the spec's checkpoint (or several, and their ensemble) on its split; write the reports into
    run_dir, then run_info.json and report.html (command: the command line as typed, which run_info.json records).

    Images any of the checkpoints learned from (their runs' splits.csv) are left out, where the split is not the
    run's own; metrics.json counts them (excluded_seen), and the run's images that could not be read
    (missing_files)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    check_explain(spec.explain, spec.checkpoints)
    dev = resolve_device(spec.device)
    prec = resolve_precision(spec.precision, dev)
    first = score_checkpoint(spec.checkpoints[0], spec, dev, prec, run_dir)
    if spec.explain and is_multilabel(first.ckpt):
        raise UserError(f"explain={spec.explain} draws the most confident errors of one class an image; for a "
                        "multilabel checkpoint use imgcls explain checkpoint=... inputs=..., which explains each "
                        "image's most probable label.")
    members = [first] + [score_checkpoint(p, spec, dev, prec, run_dir, like=first) for p in spec.checkpoints[1:]]
    trust = leave_out_seen(members, spec.split)
    if len(members) == 1:
        metrics = _report(first, first.probs, run_dir, spec.split, spec.topk,
                          {"checkpoint": first.checkpoint, "epoch": first.ckpt.get("epoch"), "tta": spec.tta,
                           **trust})
        rows = [("checkpoint", first.checkpoint), ("dataset", first.dataset)]
        if first.features is not None:
            write_features(run_dir, first)
            rows.append(("features.npy", f"{first.features.shape[0]} x {first.features.shape[1]}"))
        rows += [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "num_samples"]
        rows += [(k, v) for k, v in trust.items() if v]
        if spec.explain:
            explained = write_eval_explanations(first, spec.explain, spec.explain_method, dev, run_dir / "explain")
            rows += [(f"explain/ {k}", v) for k, v in explained.items()]
        out.show(out.table("Evaluation", ["metric", "value"], rows))
        result = {**metrics, **trust}
    else:
        result = _report_ensemble(members, spec, run_dir, trust)
    finish_eval(run_dir, spec, members, dev, prec, started, command)  # last: the report shows every file before it
    return result


def _report_ensemble(members: list[Scored], spec: EvalSpec, run_dir: Path, trust: dict[str, int]) -> dict[str, Any]:
    """Each member's reports in members/<i>, the ensemble's in run_dir, and members.csv comparing them."""
    table = []
    for i, member in enumerate(members):
        m = _report(member, member.probs, run_dir / "members" / f"{i}", spec.split, spec.topk,
                    {"checkpoint": member.checkpoint, "epoch": member.ckpt.get("epoch"), "tta": spec.tta, **trust})
        table.append({"member": str(i), "checkpoint": member.checkpoint, **m})
    first = members[0]
    metrics = _report(first, combine(members, spec.ensemble), run_dir, spec.split, spec.topk,
                      {"ensemble": spec.ensemble, "members": [m.checkpoint for m in members], "tta": spec.tta,
                       **trust})
    table.append({"member": f"ensemble ({spec.ensemble})", "checkpoint": f"{len(members)} members", **metrics})
    columns = ["member", "checkpoint", *result_columns(spec.topk, is_multilabel(first.ckpt))]
    write_csv(run_dir / "members.csv", table, columns)
    out.show(out.table(f"Ensemble of {len(members)} on {first.dataset}", columns,
                       [[row.get(c) for c in columns] for row in table]))
    return {**metrics, **trust}


def write_features(run_dir: Path, scored: Scored) -> None:
    """features.npy (N x D float32) and labels.npy (N int64), rows in predictions.csv's order."""
    for name, array in (("features.npy", scored.features), ("labels.npy", scored.targets.astype(np.int64))):
        buffer = io.BytesIO()
        np.save(buffer, array)
        write_text_atomic(run_dir / name, buffer.getvalue())
    log.info(f"features: {scored.features.shape[0]} x {scored.features.shape[1]} embeddings in "
             f"{run_dir / 'features.npy'}, labels in labels.npy")


def run_sweep_eval(spec: EvalSpec, run_dir: str | Path, command: str | None = None) -> list[dict[str, Any]]:
    """Every job's best checkpoint of the spec's sweep folder on its test split: a leaderboard, best first."""
    import yaml

    sweep, run_dir = Path(str(spec.sweep)), Path(run_dir)
    jobs = sorted(sweep.glob("*/checkpoints/best.pt"))
    if not jobs:
        raise UserError(f"sweep={sweep}: no <job>/checkpoints/best.pt in it; give a folder that imgcls train -m "
                        "wrote.")
    board = []
    for best in jobs:
        job = best.parent.parent
        metrics = run_eval(replace(spec, checkpoints=(str(best),)), run_dir / job.name, command)
        overrides = job / ".hydra" / "overrides.yaml"
        board.append({"job": job.name.split("_", 1)[0],
                      "overrides": ",".join(yaml.safe_load(overrides.read_text()) or []) if overrides.is_file()
                      else "", **metrics, "checkpoint": str(best)})
    multilabel = "map_macro" in board[0]
    board.sort(key=lambda r: -r["map_macro" if multilabel else "accuracy"])
    columns = ["job", "overrides", *result_columns(spec.topk, multilabel), "checkpoint"]
    write_csv(run_dir / "leaderboard.csv", board, columns)
    out.show(out.table(f"Leaderboard: {len(board)} jobs of {sweep}", columns[:-1],
                       [[r.get(c) for c in columns[:-1]] for r in board]))
    return board


def predict_probs(model: nn.Module, loader: Any, amp: Any, tta: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """predictor.predict's probabilities and targets (for callers not yet calling it)."""
    result = predict(model, loader, amp, tta=tta)
    return result.outputs, result.targets
