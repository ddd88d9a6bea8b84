"""What a user sees of `imgcls check`: the run directory on the last line, exit status 0 with nothing found, 1 with a
fail_on kind found (said on stderr), and a user's mistake as one line with exit status 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_no_traceback, assert_user_error, run_cli, run_in_one_process, write_png

pytest.importorskip("imagehash")


def folder(root: Path, copies: bool) -> Path:
    rng = np.random.default_rng(2)
    for c in ("a", "b"):
        for i in range(6):
            write_png(root / "train" / c / f"{i}.png", (rng.random((1, 16, 16)) * 255).astype(np.uint8))
    if copies:
        (root / "test" / "a").mkdir(parents=True)
        shutil.copy(root / "train/a/0.png", root / "test/a/leak.png")
    return root


def test_a_leak_with_fail_on_leakage_exits_1_after_writing_everything(tmp_path):
    data = folder(tmp_path / "data", copies=True)
    result = run_cli("check", "dataset=imagefolder", f"dataset.root={data}", "dataset.val_fraction=0",
                     "fail_on=[leakage,unreadable]", cwd=tmp_path)
    assert result.returncode == 1, result.describe()
    assert_no_traceback(result)
    assert result.stderr_lines == [f"error: fail_on: found leakage (1); listed in {result.run_dir / 'issues.csv'}."]
    assert result.run_dir.parent == tmp_path / "outputs" / "check"
    assert {p.name for p in result.run_dir.iterdir()} >= {"check.json", "issues.csv", "report.html", "config.yaml"}
    assert json.loads((result.run_dir / "check.json").read_text())["failed_on"] == ["leakage"]


def test_nothing_found_exits_0_and_mistakes_are_one_line_with_exit_status_2(tmp_path):
    data = folder(tmp_path / "data", copies=False)
    few = tmp_path / "few"
    for c, n in (("a", 4), ("tiny", 1)):
        for i in range(n):
            write_png(few / c / f"{i}.png", np.full((1, 8, 8), 40 * i + (c == "a") * 9, np.uint8))
    base = ["check", "dataset=imagefolder", f"dataset.root={data}", "dataset.val_fraction=0"]
    results = run_in_one_process({
        "clean": ([*base, "fail_on=[leakage,duplicates,unreadable]"], tmp_path),
        "fail_on": ([*base, "fail_on=[leaks]"], tmp_path),
        "no_root": (["check", "dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}"], tmp_path),
        "dataset": (["check", "dataset=digitz"], tmp_path),
        "write_clean": (["check", "dataset=digits", "write_clean=true"], tmp_path),
        "folds": (["check", "dataset=imagefolder", f"dataset.root={few}", "dataset.val_fraction=0",
                   "dataset.test_fraction=0", "labels=true", "check.folds=2"], tmp_path),
        "oof": ([*base, "labels=true", f"check.oof={tmp_path / 'none.npy'}"], tmp_path),
    })
    clean = results["clean"]
    assert clean.returncode == 0 and clean.stderr_lines == [], clean.describe()
    assert clean.run_dir.is_dir()
    assert_user_error(results["fail_on"], "fail_on names 'leaks'", "leakage, duplicates, label_issues, unreadable")
    assert_user_error(results["no_root"], "is not a folder")
    assert_user_error(results["dataset"], "unknown dataset 'digitz'", "Did you mean digits")
    assert_user_error(results["write_clean"], "dataset=imagefolder or dataset=csv")
    assert_user_error(results["folds"], "class 'tiny' has 1", "check.folds")
    assert_user_error(results["oof"], "check.oof=", "no oof_probs.npy")
