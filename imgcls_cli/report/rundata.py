"""What a report shows, read from the files of a run directory: a train run (summary.json, metrics.csv, eval/) or
an eval run (metrics.json, predictions.csv, run_info.json), with what could not be read noted, never guessed."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls_cli.rundir import read_csv, unescape_cell

EXPLANATIONS = Path("explain") / "explanations.csv"
EXPLANATION_COLUMNS = ("key", "kind", "target", "label", "probability", "overlay")


@dataclass
class Prediction:
    key: str
    target: int  # class indices
    label: int
    probability: float


@dataclass
class Evaluation:
    """One split's scores: the files imgcls eval (or train's test of best.pt) wrote into `folder`."""

    folder: Path
    metrics: dict[str, Any]
    classes: list[str]
    per_class: list[dict[str, str]]
    id_column: str
    predictions: list[Prediction]
    explanations: list[dict[str, str]] = field(default_factory=list)
    multilabel: bool = False  # per_class holds per_label.csv's rows


@dataclass
class RunRecord:
    run_dir: Path
    kind: str  # train | eval
    summary: dict[str, Any]  # summary.json (train) or run_info.json (eval); {} when missing
    config: dict[str, Any]
    config_text: str
    epochs: list[dict[str, str]]  # metrics.csv
    evaluation: Evaluation | None
    skipped: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)  # files that are missing or could not be read


def run_kind(path: Path) -> str | None:
    """train, eval or sweep for a folder imgcls wrote, else None."""
    if not path.is_dir():
        return None
    if (path / "summary.json").is_file() or (path / "metrics.csv").is_file():
        return "train"
    if (path / "metrics.json").is_file() and (path / "predictions.csv").is_file():
        return "eval"
    if (path / "summary.csv").is_file() or any(path.glob("*/.hydra/overrides.yaml")):
        return "sweep"
    return None


def _json(path: Path, notes: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        notes.append(f"{path.name} could not be read ({exc})")
        return {}
    return data if isinstance(data, dict) else {}


def _csv(path: Path, notes: list[str]) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        return read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        notes.append(f"{path.name} could not be read ({exc})")
        return []


def _classes(folder: Path, per_class: list[dict[str, str]]) -> list[str]:
    """The class order of the confusion matrix (its header), else per_class.csv's."""
    path = folder / "confusion_matrix.csv"
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if len(header) > 1:
            return [unescape_cell(c) for c in header[1:]]
    return [row.get("class", "") for row in per_class]


def _predictions(path: Path, classes: list[str]) -> tuple[str, list[Prediction]]:
    """predictions.csv's id column and its scored rows (those with a target and no error)."""
    rows = read_csv(path)
    with open(path, newline="", encoding="utf-8") as f:
        id_column = unescape_cell(next(csv.reader(f), ["index"])[0])
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for row in rows:
        target, label = index.get(row.get("target") or ""), index.get(row.get("label") or "")
        if target is None or label is None or row.get("error"):
            continue
        try:
            probability = float(row.get("probability") or "nan")
        except ValueError:
            probability = float("nan")
        out.append(Prediction(row.get(id_column, ""), target, label, probability))
    return id_column, out


def read_evaluation(folder: Path, notes: list[str]) -> Evaluation | None:
    """The eval files of `folder`, or None where it holds no metrics.json and predictions.csv."""
    if not (folder / "metrics.json").is_file() or not (folder / "predictions.csv").is_file():
        return None
    metrics = _json(folder / "metrics.json", notes)
    if (folder / "per_label.csv").is_file():  # task=multilabel: a row per label, no confusion matrix of classes
        per_label = _csv(folder / "per_label.csv", notes)
        return Evaluation(folder, metrics, [], per_label, "", [], [], multilabel=True)
    per_class = _csv(folder / "per_class.csv", notes)
    classes = _classes(folder, per_class)
    id_column, predictions = _predictions(folder / "predictions.csv", classes)
    explanations = []
    if (folder / EXPLANATIONS).is_file():
        explanations = [row for row in _csv(folder / EXPLANATIONS, notes) if row.get("key") is not None]
    return Evaluation(folder, metrics, classes, per_class, id_column, predictions, explanations)


def read_skipped(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [(line.partition("\t")[0], line.partition("\t")[2]) for line in lines if line.strip()]


def read_run(run_dir: Path) -> RunRecord:
    """Everything a run directory's report shows (a train run's test evaluation lives in its eval/ folder)."""
    import yaml

    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    if kind not in ("train", "eval"):
        raise ValueError(f"{run_dir} is not a train or eval run directory")
    notes: list[str] = []
    summary = _json(run_dir / ("summary.json" if kind == "train" else "run_info.json"), notes)
    config_text = (run_dir / "config.yaml").read_text(encoding="utf-8", errors="replace") \
        if (run_dir / "config.yaml").is_file() else ""
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as exc:
        notes.append(f"config.yaml could not be read ({str(exc).splitlines()[0]})")
        config = {}
    epochs = _csv(run_dir / "metrics.csv", notes) if kind == "train" else []
    evaluation = read_evaluation(run_dir / "eval" if kind == "train" else run_dir, notes)
    return RunRecord(run_dir, kind, summary, config if isinstance(config, dict) else {}, config_text, epochs,
                     evaluation, read_skipped(run_dir / "skipped_files.txt"), notes)
