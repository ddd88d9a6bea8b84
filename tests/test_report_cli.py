"""report.html as the commands write it: a training run's (the shared tiny run), a sweep's, an eval's (thumbnails,
run_info.json), an eval whose report cannot be written (one warning line, the run unharmed), and `imgcls report`
as the docs show it, on copies of those directories (the shared ones stay read-only), with its one-line errors.
The cheap calls run in one child process (conftest.run_in_one_process)."""
from __future__ import annotations

import html
import shutil
from pathlib import Path

import pytest

import test_docs
from conftest import TINY_NUM_SAMPLES, assert_ok, assert_user_error, read_json, run_in_one_process
from reportkit import page_data, read_predictions

REPORT_CHECKS = [c for c in test_docs.CHECKS if c.on_runs]
N_TEST = 120  # the tiny run's test images (TINY_NUM_SAMPLES x test_fraction 0.2)


def thumbnails(path: Path) -> list[list]:
    data = page_data(path.read_text(encoding="utf-8"))
    return [item for cell in data["cells"].values() for item in cell["items"]]


def test_a_training_run_writes_its_report_with_a_thumbnail_of_every_test_image(trained_run):
    page = trained_run.run_dir / "report.html"
    text = page.read_text(encoding="utf-8")
    summary = read_json(trained_run.run_dir / "summary.json")
    assert "simple_cnn on synthetic" in text and f"{100 * summary['test_accuracy']:.2f}%" in text
    assert html.escape(summary["command"]) in text and str(summary.get("git_commit")) in text
    items = thumbnails(page)
    assert len(items) == N_TEST == round(TINY_NUM_SAMPLES * 0.2) and all(item[0] for item in items)
    predictions = read_predictions(trained_run.run_dir / "eval")
    assert {item[2] for item in items} == set(predictions)


def test_a_sweep_writes_a_report_linking_each_jobs_report(sweep_run):
    sweep_dir = sweep_run.run_dir
    text = (sweep_dir / "sweep_report.html").read_text(encoding="utf-8")
    jobs = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 2
    for job in jobs:
        assert (job / "report.html").is_file() and f'href="{job.name}/report.html"' in text
    assert "schedule=step" in text and "schedule=cosine" in text


@pytest.fixture(scope="module")
def calls(trained_run, sweep_run, tmp_path_factory):
    """In a scratch folder: copies of the shared runs where the docs' commands expect them, an eval into
    outputs/eval/run, an eval whose report.html is in the way (a folder), then every `imgcls report` command of
    the docs, and the mistakes."""
    work = tmp_path_factory.mktemp("report_cli")
    shutil.copytree(trained_run.run_dir, work / "outputs" / "train" / "run")
    shutil.copytree(sweep_run.run_dir, work / "outputs" / "train-multirun" / "time")
    (work / "blocked" / "report.html").mkdir(parents=True)
    (work / "notes.txt").write_text("not a run\n")
    best = "outputs/train/run/checkpoints/best.pt"
    batch = {
        "eval": (["eval", f"checkpoint={best}", "hydra.run.dir=outputs/eval/run"], work),
        "blocked": (["eval", f"checkpoint={best}", "hydra.run.dir=blocked"], work),
        **{f"docs {c.key}": (c.argv, work) for c in REPORT_CHECKS},
        "no path": (["report"], work),
        "not a run": (["report", "notes.txt"], work),
        "gone": (["report", "outputs/train/nothing"], work),
    }
    return work, run_in_one_process(batch)


def test_eval_writes_run_info_and_a_report_with_its_thumbnails(calls, trained_run):
    work, results = calls
    assert_ok(results["eval"])
    run_dir = work / "outputs" / "eval" / "run"
    info = read_json(run_dir / "run_info.json")
    assert info["command"].startswith("imgcls eval checkpoint=") and info["split"] == "test"
    assert info["dataset"] == "synthetic" and info["model"] == "simple_cnn" and info["device"] == "cpu"
    items = thumbnails(run_dir / "report.html")
    assert len(items) == N_TEST and all(item[0] for item in items)
    # the same images as the training run's page: eval scored the run's own test split
    assert sorted(map(tuple, map(lambda i: i[:3], items))) == \
        sorted(map(tuple, map(lambda i: i[:3], thumbnails(trained_run.run_dir / "report.html"))))


def test_a_report_that_cannot_be_written_is_one_warning_and_the_eval_still_succeeds(calls):
    work, results = calls
    result = results["blocked"]
    assert_ok(result)
    assert result.run_dir == work / "blocked"
    shown = [line for line in result.stderr_lines + result.stdout_lines if "report.html could not be written" in line]
    logged = [line for line in (work / "blocked" / "eval.log").read_text().splitlines() if "report.html" in line]
    assert len(shown) == 1 and len(logged) == 1 and "WARNING" in logged[0], result.describe()
    assert (work / "blocked" / "report.html").is_dir()
    assert read_json(work / "blocked" / "metrics.json")["num_samples"] == N_TEST  # the eval's files are all there
    assert (work / "blocked" / "predictions.csv").is_file() and (work / "blocked" / "run_info.json").is_file()


def test_every_imgcls_report_command_of_the_docs_rebuilds_its_page(calls, trained_run):
    work, results = calls
    assert {c.argv[1] for c in REPORT_CHECKS} >= {"outputs/train/run", "outputs/eval/run",
                                                  "outputs/train-multirun/time"}
    for check in REPORT_CHECKS:
        result = results[f"docs {check.key}"]
        assert_ok(result)
        target = work / check.argv[1]
        name = "sweep_report.html" if (target / "summary.csv").is_file() else "report.html"
        assert result.stdout_lines[-1] == f"Report: {Path(check.argv[1]) / name}", result.describe()
    # a dataset held in memory, rebuilt from the run's config and splits.csv: the very thumbnails training made
    rebuilt = page_data((work / "outputs" / "train" / "run" / "report.html").read_text(encoding="utf-8"))
    original = page_data((trained_run.run_dir / "report.html").read_text(encoding="utf-8"))
    assert rebuilt["cells"] == original["cells"]
    sweep = (work / "outputs" / "train-multirun" / "time" / "sweep_report.html").read_text(encoding="utf-8")
    assert sweep.count('/report.html">') == 2


def test_imgcls_report_mistakes_are_one_line(calls):
    _, results = calls
    assert_user_error(results["no path"], "imgcls report", "RUN_OR_SWEEP_DIR")
    assert_user_error(results["not a run"], "'notes.txt' is not a run or sweep directory")
    assert_user_error(results["gone"], "does not exist")
