"""`imgcls report PATH`: report.html of a train or eval run directory written again from its files, or
sweep_report.html of a sweep folder. The evaluated images are read again as the run read them: image files by
their path, a dataset in memory rebuilt from the run's config and splits (as eval does)."""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator

import yaml

from imgcls_cli.errors import UserError, shown
from imgcls_cli.report.page import write_run_report
from imgcls_cli.report.rundata import run_kind
from imgcls_cli.report.sweep import write_sweep_report
from imgcls_cli.report.thumbs import FileImages, ImageSource, split_images

GIVE = "give outputs/train/<run>, outputs/eval/<run> or a sweep folder."
NOT_A_RUN = ("is not a run or sweep directory of imgcls (no summary.json, metrics.json with predictions.csv, or "
             f"summary.csv in it); {GIVE}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, like every other mistake
        raise UserError(f"imgcls report: {message}")


def report_command(argv: list[str]) -> int:
    parser = _Parser(prog="imgcls report", description="Write report.html of a train or eval run directory again, "
                     "or sweep_report.html of a sweep folder.")
    parser.add_argument("path", metavar="RUN_OR_SWEEP_DIR", help="outputs/train/<run>, outputs/eval/<run> or a "
                        "sweep folder (outputs/train-multirun/<time>)")
    path = Path(parser.parse_args(argv).path)
    kind = run_kind(path)
    if kind is None:
        raise UserError(f"{shown(str(path))} {NOT_A_RUN if path.exists() else 'does not exist; ' + GIVE}")
    if kind == "sweep":
        written = write_sweep_report(path)
    else:
        images, note = rebuilt_images(path, kind)
        written = write_run_report(path, images, note)
    print(f"Report: {written}")
    return 0


@contextlib.contextmanager
def _in_folder(folder: Path | None) -> Iterator[None]:
    """The run's own working folder while its dataset is read again: its relative paths are relative to it."""
    if folder is None or not folder.is_dir():
        yield
        return
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _dataset(run_dir: Path, kind: str) -> tuple[dict[str, Any] | None, int, str]:
    """(the evaluated dataset's config, the seed, the split) as the run recorded them."""
    if kind == "train":
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        dataset = dict(cfg.get("dataset") or {})
        if (run_dir / "splits.csv").is_file():
            dataset["splits_file"] = str((run_dir / "splits.csv").resolve())
        return dataset or None, int(cfg.get("seed") or 0), "test"
    info = json.loads((run_dir / "run_info.json").read_text(encoding="utf-8")) \
        if (run_dir / "run_info.json").is_file() else {}
    return info.get("dataset_config") or None, int(info.get("seed") or 0), str(info.get("split") or "test")


def _prediction_keys(folder: Path) -> tuple[str, list[str]]:
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return (rows[0][0], [r[0] for r in rows[1:] if r]) if rows else ("index", [])


def rebuilt_images(run_dir: Path, kind: str) -> tuple[ImageSource | None, str]:
    """The evaluated images again, or None and the reason the page gives."""
    from imgcls_cli.engine.eval_data import file_base, recorded_cwd

    folder = run_dir / "eval" if kind == "train" else run_dir
    if not (folder / "predictions.csv").is_file() or (folder / "per_label.csv").is_file():
        return None, ""  # none evaluated, or multilabel: no confusion matrix to show the images of
    try:
        dataset, seed, split = _dataset(run_dir, kind)
        if dataset is None:
            return None, "Thumbnails: none, the run does not record the dataset it evaluated."
        cwd = recorded_cwd(run_dir)
        id_column, keys = _prediction_keys(folder)
        if id_column == "path":
            base = file_base(dataset, cwd)
            return (FileImages({k: base / k for k in keys}), "") if base is not None else \
                (None, "Thumbnails: none, the run does not record its images' folder.")
        from imgcls_cli.data.datasets import load_dataset

        with _in_folder(cwd):
            bundle = load_dataset(dataset, seed)
        return split_images(bundle.splits[split]), ""
    except Exception as exc:  # noqa: BLE001 - the page is written without thumbnails, and says why
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"Thumbnails: none, the evaluated images could not be read again ({reason})."
