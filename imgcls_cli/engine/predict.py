"""`imgcls predict`: decode image files with OpenCV, convert them to the checkpoint's input, write top-k labels."""
from __future__ import annotations

import glob
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imgcls_cli import console as out
from imgcls_cli.cores import resolve_workers
from imgcls_cli.data.decode import DecodeError, decode_image, list_images
from imgcls_cli.data.inputs import InputSpec
from imgcls_cli.engine import labelsets
from imgcls_cli.engine.device import resolve_device, resolve_precision
from imgcls_cli.engine.labelsets import is_multilabel
from imgcls_cli.engine.predictor import predict, prepare
from imgcls_cli.engine.reports import prediction_rows
from imgcls_cli.errors import UserError
from imgcls_cli.export.runtime import load_for_inference
from imgcls_cli.plots import GRID_TITLE_CHARS, image_grid_figure, save_figure, shorten
from imgcls_cli.rundir import file_kind, write_csv, write_json
from imgcls_cli.specs.predict import PredictSpec
from imgcls_cli.tasks import task_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("imgcls")
GLOB_CHARS = set("*?[")
GRID_LIMIT = 64  # images in predictions.png
PREDICTIONS_TITLE = "Predictions: each image's file name, then its predicted label (probability)"


def read_list_file(text: str) -> list[Path]:
    """@list.txt: one path a line (blank lines and # comments skipped), relative to the list file's folder.

    A listed file that is missing or unreadable gets its error row, like any other input."""
    listing = Path(text[1:]).expanduser()
    kind = file_kind(listing)
    if kind not in ("", "missing"):  # reading a FIFO would wait for a writer forever
        raise UserError(f"inputs={text}: the list file {listing} is {kind}, not a regular file; give a text file "
                        "of paths.")
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"inputs={text}: cannot read the list file {listing} ({exc.__class__.__name__}).") from None
    paths = [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise UserError(f"inputs={text}: the list file {listing} names no file.")
    return [p if p.is_absolute() else listing.parent / p for p in paths]


def resolve_inputs(inputs: str) -> list[Path]:
    """A file, a folder (recursive), a glob pattern or @list.txt -> the image paths (sorted, or in list order)."""
    text = str(inputs)
    if text.startswith("@"):
        return read_list_file(text)
    if any(c in text for c in GLOB_CHARS) and not Path(text).exists():
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        # Folders are skipped; anything else matched (a FIFO, a device, a dangling link) gets its error row.
        files = [p for p in matches if not p.is_dir()]
        if not files:
            raise UserError(f"inputs={text} matches no file.")
        return files
    path = Path(text)
    if not path.exists():
        raise UserError(f"inputs not found: {text}")
    if not path.is_dir():  # a file; a FIFO or device gets its error row, never opened
        return [path]
    files = list_images(path)
    if not files:
        raise UserError(f"no image files (jpg, jpeg, png, bmp, tif, tiff, webp) under {text}.")
    return files


class ImageFiles(Dataset):
    """Decodes one file per item; a file that cannot be decoded yields its error message instead."""

    def __init__(self, paths: list[Path], channels: int, size: int) -> None:
        self.paths, self.channels, self.size = paths, channels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        kind = file_kind(self.paths[i])
        if kind not in ("", "missing"):  # opening a FIFO would wait for a writer forever
            return i, None, f"not a regular file ({kind})"
        try:
            return i, torch.from_numpy(decode_image(self.paths[i], self.channels, self.size)), ""
        except DecodeError as exc:
            return i, None, str(exc)


def _collate(items: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor | None, list[str]]:
    good = [x for _, x, _ in items if x is not None]
    return [i for i, _, _ in items], (torch.stack(good) if good else None), [e for _, _, e in items]


def _decoded(loader: DataLoader, errors: list[str], shown: list[np.ndarray], inputs: InputSpec,
             device: torch.device, memory_format: torch.memory_format) -> Iterator[tuple[torch.Tensor, None]]:
    """The loader's decoded batches, normalized on the device; each file's error goes into errors, the first
    decoded images into shown (for predictions.png)."""
    for indices, images, errs in loader:
        for i, e in zip(indices, errs):
            errors[i] = e
        if images is None:
            continue
        if len(shown) < GRID_LIMIT:
            shown += list(images[: GRID_LIMIT - len(shown)].numpy())
        yield inputs.normalize(images.to(device, non_blocking=True)).contiguous(memory_format=memory_format), None


def prediction_title(row: dict[str, Any]) -> str:
    """An image's title in predictions.png: its file name, then its label and probability, each cut to fit."""
    if "top1_label" in row:  # multilabel: the set of labels, or "(no label)"
        return f"{shorten(Path(row['path']).name)}\n{shorten(str(row['label']) or '(no label)', GRID_TITLE_CHARS)}"
    label = f" ({float(row['probability']):.2f})"
    return f"{shorten(Path(row['path']).name)}\n{shorten(str(row['label']), GRID_TITLE_CHARS - len(label))}{label}"


def predictions_figure(images: Sequence[np.ndarray], rows: Sequence[dict[str, Any]]) -> Figure:
    """predictions.png: the decoded images (uint8, C x H x W) titled by prediction_title of their rows."""
    return image_grid_figure(np.stack(images), [prediction_title(r) for r in rows], limit=GRID_LIMIT,
                             title=PREDICTIONS_TITLE)


def run_predict(spec: PredictSpec, run_dir: str | Path) -> dict[str, Any]:
    """Predict every input file; write predictions.csv (or spec.output); return counts and the file written."""
    dev = resolve_device(spec.device)
    prec = resolve_precision(spec.precision, dev)
    ckpt, model = load_for_inference(spec.checkpoint, dev)
    paths = resolve_inputs(spec.inputs)
    model, amp, channels_last = prepare(model, ckpt["config"], dev, spec.precision, prec)
    inputs, classes = InputSpec.from_checkpoint(ckpt), list(ckpt["classes"])
    loader = DataLoader(ImageFiles(paths, inputs.channels, inputs.size), batch_size=spec.batch_size,
                        num_workers=resolve_workers(spec.num_workers, items=len(paths)), collate_fn=_collate,
                        pin_memory=dev.type == "cuda")
    errors = [""] * len(paths)
    shown: list[np.ndarray] = []  # the first decoded images, for predictions.png
    start = time.perf_counter()
    batches = _decoded(loader, errors, shown, inputs, dev, torch.channels_last if channels_last else
                       torch.contiguous_format)
    multilabel = is_multilabel(ckpt)
    probs_np = predict(model, batches, amp, activation=task_of(ckpt.get("task")).activation).outputs.numpy()
    seconds = time.perf_counter() - start
    if len(probs_np) == 0:
        probs_np = np.zeros((0, len(classes)), np.float32)
    rows, columns = checkpoint_rows(ckpt, probs_np, classes, [str(p) for p in paths], "path", spec.topk, errors)
    target, as_json = output_paths(spec.output, run_dir)
    write_csv(target, rows, columns)
    write_json(as_json, [prediction_json(row, spec.topk, multilabel) for row in rows])
    if shown:
        labelled = [r for r in rows if not r["error"]][: len(shown)]
        save_figure(predictions_figure(shown, labelled), Path(run_dir) / "predictions.png")
    ok = len(probs_np)
    _show(rows, ok, len(paths), seconds, target)
    if ok == 0:
        raise UserError(f"none of the {len(paths)} input file(s) could be decoded (first: {paths[0]}: {errors[0]}).")
    return {"predicted": ok, "failed": len(paths) - ok, "output": str(target), "seconds": seconds}


def output_paths(output: str | None, run_dir: str | Path) -> tuple[Path, Path]:
    """Where predictions.csv and predictions.json go: the run directory, or `output` and the .json beside it.

    An output that is a link is written through to its target (rundir.atomic_writer); one that is a device or FIFO
    (/dev/stdout, /dev/null, a pipe) gets the CSV written into it and the .json in the run directory, never beside
    it: no file is ever created in /dev or replaces a device. A folder is refused."""
    run_dir = Path(run_dir)
    if not output:
        return run_dir / "predictions.csv", run_dir / "predictions.json"
    target = Path(str(output)).expanduser()
    kind = file_kind(target)
    if kind == "a folder":
        raise UserError(f"output={output} is a folder; give a file path such as {target / 'predictions.csv'}.")
    if kind not in ("", "missing"):
        return target, run_dir / "predictions.json"
    as_json = target.with_suffix(".json")
    return target, as_json if as_json != target else target.with_name(target.name + ".json")


def checkpoint_rows(ckpt: dict[str, Any], probs: np.ndarray, classes: Sequence[str], names: Sequence[str],
                    id_column: str, topk: int, errors: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """predictions.csv's rows and columns for a checkpoint's probabilities: the labels at or above its thresholds
    (multilabel), or the most probable class."""
    if is_multilabel(ckpt):
        return labelsets.prediction_rows(probs, classes, ckpt["thresholds"], names, id_column, topk, errors=errors)
    return prediction_rows(probs, classes, names, id_column, topk, errors=errors)


def prediction_json(row: dict[str, Any], topk: int, multilabel: bool = False) -> dict[str, Any]:
    """predictions.json's entry of a predictions.csv row: the path, the top-k list and the error; a multilabel
    row also lists its labels (each at or above its threshold) with their probabilities."""
    if multilabel:
        ranked = [(row.get(f"top{j}_label"), row.get(f"top{j}_probability")) for j in range(1, topk + 1)]
        chosen = [(label, float(p)) for label, p in zip(str(row.get("label") or "").split("|"),
                                                         str(row.get("probability") or "").split("|")) if label]
        labels = {"labels": [{"label": label, "probability": p} for label, p in chosen]}
    else:
        ranked = [(row.get("label"), row.get("probability"))]
        ranked += [(row.get(f"top{j}_label"), row.get(f"top{j}_probability")) for j in range(2, topk + 1)]
        labels = {}
    top = [{"label": label, "probability": p} for label, p in ranked if label is not None]
    return {"path": row["path"], **labels, "topk": top, "error": row["error"] or None}


def _show(rows: list[dict[str, Any]], ok: int, total: int, seconds: float, target: Path, limit: int = 20) -> None:
    shown = [(r["path"], r.get("label", ""), r.get("probability", ""), r["error"]) for r in rows[:limit]]
    title = f"Predictions ({ok} of {total} images{f', first {limit} shown' if total > limit else ''})"
    out.show(out.table(title, ["path", "label", "probability", "error"], shown))
    log.info(f"{ok} images predicted, {total - ok} failed, {ok / max(seconds, 1e-9):.0f} images/s; wrote {target}")
