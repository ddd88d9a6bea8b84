"""Eval directories made in-process for the report's tests (tests/test_report*.py): the real eval writer
(engine/reports.write_eval_reports) over predictions drawn here, on real images (Fashion-MNIST's test split where
it is installed) or generated ones; explanations as the explain command writes them (explain/explanations.csv)."""
from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

FASHION_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
HOSTILE_CLASSES = ["</script><script>alert('class')</script>", "<img src=x onerror=alert(1)>", "=cmd|' /C calc'!A0",
                   "a & b \"quoted\"", "plain"]


def ten_thousand_images() -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """10,000 test images (N, 1, 28, 28) uint8, their labels, class names and where they come from."""
    if FASHION_TEST.is_file():
        from imgcls_cli.data.builders import FASHION_CLASSES
        from imgcls_cli.data.idx import read_idx

        images = read_idx(FASHION_TEST)[:, None]
        labels = read_idx(FASHION_TEST.with_name("t10k-labels-idx1-ubyte.gz")).astype(np.int64)
        return images, labels, list(FASHION_CLASSES), "Fashion-MNIST's test split"
    from imgcls_cli.data.synthetic import CLASS_NAMES, make_synthetic

    images, labels = make_synthetic(10_000, 10, 28, 1, 0)
    return images, labels.astype(np.int64), list(CLASS_NAMES[:10]), "generated 28x28 images"


def drawn_probabilities(labels: np.ndarray, num_classes: int, accuracy: float = 0.85, seed: int = 0) -> np.ndarray:
    """Probabilities whose argmax is the label for about `accuracy` of the rows, with spread-out confidences."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    wrong = rng.random(n) > accuracy
    predicted = np.where(wrong, (labels + rng.integers(1, num_classes, n)) % num_classes, labels)
    logits = rng.normal(0, 1, (n, num_classes))
    logits[np.arange(n), predicted] += rng.uniform(0.5, 5, n)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True)


def write_eval_dir(folder: Path, labels: np.ndarray, classes: Sequence[str], ids: Sequence[str] | None = None,
                   id_column: str = "index", run_info: dict | None = None, accuracy: float = 0.85) -> Path:
    """An eval run directory as imgcls eval writes it (its eval files, config.yaml and run_info.json)."""
    from imgcls_cli.engine.reports import write_eval_reports

    ids = list(ids) if ids is not None else [str(i) for i in range(len(labels))]
    probs = drawn_probabilities(labels, len(classes), accuracy)
    write_eval_reports(folder, probs, labels, list(classes), ids, id_column, 3, extra={"split": "test"})
    (folder / "config.yaml").write_text("checkpoint: best.pt\nsplit: test\nnote: '</script><b>bold</b>'\n")
    info = {"model": "simple_cnn", "dataset": "made-up", "split": "test", "device": "cpu", "precision": "fp32",
            "wall_seconds": 1.5, "command": "imgcls eval checkpoint='</script>.pt'", **(run_info or {})}
    (folder / "run_info.json").write_text(json.dumps(info))
    return folder


def write_explanations(folder: Path, keys: Sequence[str], images: np.ndarray, extra_rows: Sequence[dict] = ()) -> None:
    """explain/explanations.csv with a red-tinted overlay PNG of each key's image (the contract with imgcls
    explain: key,kind,target,label,probability,overlay; overlay relative to explain/)."""
    import cv2

    explain = folder / "explain"
    (explain / "overlays").mkdir(parents=True, exist_ok=True)
    rows = read_predictions(folder)
    with open(explain / "explanations.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "kind", "target", "label", "probability", "overlay"])
        for i, (key, image) in enumerate(zip(keys, images)):
            gray = cv2.resize(np.asarray(image)[0], (64, 64))
            overlay = np.stack([gray // 2, gray // 2, np.maximum(gray, 128)], -1)  # BGR: red-tinted
            name = f"overlays/{i}.png"
            cv2.imwrite(str(explain / name), overlay)
            row = rows[key]
            kind = "correct" if row["label"] == row["target"] else "error"
            writer.writerow([key, kind, row["target"], row["label"], row["probability"], name])
        for row in extra_rows:
            writer.writerow([row.get(c, "") for c in ("key", "kind", "target", "label", "probability", "overlay")])


def read_predictions(folder: Path) -> dict[str, dict[str, str]]:
    """predictions.csv by key (its first column), cells as written (spreadsheet quoting undone)."""
    from imgcls_cli.rundir import read_csv

    with open(folder / "predictions.csv", newline="", encoding="utf-8") as f:
        id_column = next(csv.reader(f))[0]
    return {row[id_column]: row for row in read_csv(folder / "predictions.csv")}


def page_data(html: str) -> dict:
    """The JSON the page's script reads (its #report-data block)."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert match, "the page has no #report-data block"
    return json.loads(match.group(1))


def jpeg_shape(b64: str) -> tuple[int, ...]:
    import cv2

    image = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "a thumbnail is not a decodable JPEG"
    return image.shape
