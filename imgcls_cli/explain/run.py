"""`imgcls explain`: image files decoded and preprocessed as `imgcls predict` does them, each explained by the
checkpoint's model: an overlay PNG per image, mosaic.png of the overlays and explanations.csv (a row per input,
an error row for a file that cannot be decoded)."""
from __future__ import annotations

import difflib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls_cli import console as out
from imgcls_cli.checkpoint import load_checkpoint
from imgcls_cli.engine.device import resolve_device
from imgcls_cli.engine.predict import ImageFiles, resolve_inputs
from imgcls_cli.engine.reports import prediction_rows
from imgcls_cli.errors import UserError, shown
from imgcls_cli.explain.core import Explained, Explainer, refuse_exported
from imgcls_cli.explain.methods import require_captum
from imgcls_cli.explain.render import MOSAIC_LIMIT, file_stem, mosaic, overlay, top_lines, write_png
from imgcls_cli.rundir import write_csv
from imgcls_cli.specs.explain import ExplainSpec

log = logging.getLogger("imgcls")
COLUMNS = ["path", "explained", "explained_probability", "label", "probability", "top2_label", "top2_probability",
           "top3_label", "top3_probability", "overlay", "error"]


def resolve_target(target: str, classes: list[str]) -> str | int:
    """target= as "predicted", "true" or the index of the class it names; another name is a one-line error."""
    if target in ("predicted", "true"):
        return target
    if target in classes:
        return classes.index(target)
    close = difflib.get_close_matches(target, classes, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    listed = ", ".join(classes[:30]) + (f" (+{len(classes) - 30} more)" if len(classes) > 30 else "")
    raise UserError(f"target={shown(target)} is not a class of the checkpoint.{hint} Give predicted, true or one of: "
                    f"{listed}.")


def true_labels(paths: list[Path], classes: list[str]) -> list[int]:
    """Each file's class from the folder it is in (class folders: <class>/<file>); a file whose folder is not a
    class is a one-line error."""
    labels = []
    for path in paths:
        folder = path.parent.name
        if folder not in classes:
            raise UserError(f"target=true needs each image's true class from its folder (<class>/<file>), but {path} "
                            f"is in {shown(folder)}, which is not a class of the checkpoint; lay the images out in "
                            "class folders, or use target=predicted or target=CLASS.")
        labels.append(classes.index(folder))
    return labels


def _rows_of(result: Explained, classes: list[str], names: list[str]) -> list[dict[str, Any]]:
    """predict's columns (label, probability, top2/top3, error) for the batch, keyed by overlay, and the class each
    map explains with its probability."""
    rows, _ = prediction_rows(result.probs, classes, names, "overlay", 3)
    for row, p, c in zip(rows, result.probs, result.classes):
        row["explained"], row["explained_probability"] = classes[int(c)], round(float(p[int(c)]), 6)
    return rows


def _explain_batch(explainer: Explainer, files: ImageFiles, batch: list[int], wanted: str | int,
                   truth: list[int] | None, run_dir: Path, rows: list[dict[str, Any]],
                   pictures: list[np.ndarray]) -> None:
    """Decode, explain and draw one batch of the inputs; fill their rows (an error row for a file that does not
    decode) and keep the first pictures for the mosaic."""
    decoded = [files[i] for i in batch]
    for i, _, error in decoded:
        rows[i]["error"] = error
    good = [(i, x) for i, x, _ in decoded if x is not None]
    if not good:
        return
    indices = [i for i, _ in good]
    images = torch.stack([x for _, x in good])
    chosen = None if wanted == "predicted" else np.array([truth[i] if truth is not None else wanted for i in indices])
    result = explainer(images, chosen)
    classes = explainer.classes
    width = len(str(len(files) - 1))
    names = [f"overlays/{i:0{width}d}_{file_stem(files.paths[i])}.png" for i in indices]
    for row, i in zip(_rows_of(result, classes, names), indices):
        rows[i].update(row)
    for j, i in enumerate(indices):
        lines = [f"{explainer.method}: {rows[i]['explained']} ({rows[i]['explained_probability']:.3f})",
                 *top_lines(result.probs[j], classes)]
        picture = overlay(images[j].numpy(), result.heat[j], lines)
        write_png(run_dir / names[j], picture)
        if len(pictures) < MOSAIC_LIMIT:
            pictures.append(picture)


def run_explain(spec: ExplainSpec, run_dir: str | Path) -> dict[str, Any]:
    """Explain every input file; write its overlay, explanations.csv and mosaic.png into run_dir."""
    run_dir = Path(run_dir)
    require_captum()
    refuse_exported(spec.checkpoint)
    ckpt = load_checkpoint(spec.checkpoint)
    classes = [str(c) for c in ckpt["classes"]]
    wanted = resolve_target(spec.target, classes)
    explainer = Explainer(ckpt, spec.method, resolve_device(spec.device))
    paths = resolve_inputs(spec.inputs)
    truth = true_labels(paths, classes) if wanted == "true" else None
    files = ImageFiles(paths, explainer.input.channels, explainer.input.size)
    rows: list[dict[str, Any]] = [{"path": str(p)} for p in paths]
    pictures: list[np.ndarray] = []
    start = time.perf_counter()
    for first in range(0, len(paths), spec.batch_size):
        _explain_batch(explainer, files, list(range(first, min(first + spec.batch_size, len(paths)))), wanted, truth,
                       run_dir, rows, pictures)
    seconds = time.perf_counter() - start
    write_csv(run_dir / "explanations.csv", rows, COLUMNS)
    ok = sum(1 for r in rows if not r["error"])
    if pictures:
        write_png(run_dir / "mosaic.png", mosaic(pictures, ok))
    _show(rows, ok, spec.method, seconds, run_dir)
    if ok == 0:
        raise UserError(f"none of the {len(paths)} input file(s) could be decoded (first: {paths[0]}: "
                        f"{rows[0]['error']}).")
    return {"explained": ok, "failed": len(paths) - ok, "seconds": seconds}


def _show(rows: list[dict[str, Any]], ok: int, method: str, seconds: float, run_dir: Path, limit: int = 20) -> None:
    shown_rows = [(r["path"], r.get("explained", ""), r.get("label", ""), r.get("probability", ""), r["error"])
                  for r in rows[:limit]]
    first = f", first {limit} shown" if len(rows) > limit else ""
    title = f"Explanations ({method}, {ok} of {len(rows)} images{first})"
    out.show(out.table(title, ["path", "explained", "label", "probability", "error"], shown_rows))
    capped = f" (mosaic.png shows the first {MOSAIC_LIMIT})" if ok > MOSAIC_LIMIT else ""
    log.info(f"{ok} images explained with {method}, {len(rows) - ok} failed, in {seconds:.1f} s; wrote "
             f"{run_dir / 'explanations.csv'}, overlays/ and mosaic.png{capped}")
