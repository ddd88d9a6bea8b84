"""`imgcls eval explain=N`: the eval's N most confident errors and N correctly classified images drawn at random
(seeded with the checkpoint's training seed), each explained for the class eval predicted, in the run's explain/
folder: overlays/, mosaic.png and explanations.csv.

explanations.csv is what the HTML report reads; its columns are a contract: key (the first column of eval's
predictions.csv for the image: its path, or its index), kind (error | correct), target (the true class), label (the
predicted class), probability (the predicted class's, as in predictions.csv) and overlay (the PNG's path relative
to explain/)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgcls_cli import metrics as M
from imgcls_cli.engine.ensemble import Scored
from imgcls_cli.errors import UserError
from imgcls_cli.explain.core import Explainer, refuse_exported
from imgcls_cli.explain.methods import require_captum
from imgcls_cli.explain.render import MOSAIC_LIMIT, file_stem, mosaic, overlay, top_lines, write_png
from imgcls_cli.rundir import write_csv

log = logging.getLogger("imgcls")
COLUMNS = ["key", "kind", "target", "label", "probability", "overlay"]
BATCH = 16


def check_explain(explain: int, checkpoints: tuple[str, ...]) -> None:
    """Before anything is scored: explain=N needs captum and explains one .pt checkpoint."""
    if not explain:
        return
    require_captum()
    if len(checkpoints) > 1:
        raise UserError(f"explain={explain} explains one checkpoint's predictions, and checkpoint= names "
                        f"{len(checkpoints)} files (an ensemble); evaluate the one to explain alone.")
    for path in checkpoints:
        refuse_exported(path)


def choose_rows(probs: np.ndarray, targets: np.ndarray, n: int, seed: int) -> list[tuple[int, str]]:
    """(row, kind): the n most confident errors (most confident first), then n correct rows drawn at random with
    `seed` (in row order)."""
    errors = M.most_confident_errors(probs, targets, limit=n)
    correct = np.flatnonzero(probs.argmax(1) == targets)
    drawn = np.sort(np.random.default_rng(seed).choice(correct, size=min(n, len(correct)), replace=False))
    return [(int(i), "error") for i in errors] + [(int(i), "correct") for i in drawn]


def write_eval_explanations(scored: Scored, n: int, method: str, device: torch.device,
                            out_dir: Path) -> dict[str, Any]:
    """Explain the chosen rows of a scored split into out_dir (explain/); returns the counts."""
    explainer = Explainer(scored.ckpt, method, device)
    classes = explainer.classes
    chosen = choose_rows(scored.probs, scored.targets, n, int(scored.ckpt["config"].get("seed") or 0))
    rows: list[dict[str, Any]] = []
    pictures: list[np.ndarray] = []
    counts = {"error": 0, "correct": 0}
    for start in range(0, len(chosen), BATCH):
        part = chosen[start:start + BATCH]
        index = np.array([r for r, _ in part], dtype=np.int64)
        images, ok = scored.pixels(index)
        if not ok.any():
            continue
        part, index, images = [p for p, good in zip(part, ok) if good], index[ok], torch.from_numpy(images[ok])
        predicted = scored.probs[index].argmax(1)
        heat = explainer(images, predicted).heat  # the class eval predicted, with its test-time augmentation
        for j, (row, kind) in enumerate(part):
            name = f"overlays/{kind}_{counts[kind]:03d}_{file_stem(scored.ids[row])}.png"
            counts[kind] += 1
            record = {"key": scored.ids[row], "kind": kind, "target": classes[int(scored.targets[row])],
                      "label": classes[int(predicted[j])],
                      "probability": round(float(scored.probs[row, predicted[j]]), 6), "overlay": name}
            lines = [f"{kind}: true {record['target']}", f"{method}: {record['label']} ({record['probability']:.3f})",
                     *top_lines(scored.probs[row], classes)]
            picture = overlay(images[j].numpy(), heat[j], lines)
            write_png(out_dir / name, picture)
            rows.append(record)
            if len(pictures) < MOSAIC_LIMIT:
                pictures.append(picture)
    write_csv(out_dir / "explanations.csv", rows, COLUMNS)
    if pictures:
        write_png(out_dir / "mosaic.png", mosaic(pictures, len(rows)))
    log.info(f"explain/: {counts['error']} most confident error(s) and {counts['correct']} random correct image(s) "
             f"explained with {method}" + (f" (mosaic.png shows the first {MOSAIC_LIMIT})" if len(rows) > MOSAIC_LIMIT
                                          else ""))
    return {"errors": counts["error"], "correct": counts["correct"]}
