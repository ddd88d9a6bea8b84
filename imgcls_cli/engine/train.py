"""A whole training run: build from a plain config dict, fit, checkpoint, evaluate the best on test, report.

The parts, where a newcomer looks for them: options.py (the settings, checked once), prepare.py (everything built
before the first epoch), state.py (TrainState: what a run carries and its checkpoints), loop.py (the epochs),
resume.py (which runs can be continued), build.py (model, loss, loaders), fit.py (one epoch's steps)."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from imgcls_cli import console as out
from imgcls_cli.checkpoint import load_checkpoint
from imgcls_cli.data.datasets import DatasetBundle
from imgcls_cli.data.loader import DeviceLoader, StreamLoader, read_ids
from imgcls_cli.engine import labelsets
from imgcls_cli.engine.build import class_weights, sampler_weights  # noqa: F401  (tests/test_datasets.py)
from imgcls_cli.engine.labelsets import is_multilabel
from imgcls_cli.engine.loop import run_epochs
from imgcls_cli.engine.predictor import predict
from imgcls_cli.engine.prepare import Training, prepare
from imgcls_cli.engine.reports import result_columns, write_eval_reports, write_skipped_files
from imgcls_cli.engine.resume import ResumeRefused
from imgcls_cli.engine.run import Interrupted, Run
from imgcls_cli.errors import DivergedError
from imgcls_cli.plots import plot_curves
from imgcls_cli.report.page import write_report_safely
from imgcls_cli.report.thumbs import split_images
from imgcls_cli.rundir import git_commit, run_status
from imgcls_cli.specs.train import TrainSpec
from imgcls_cli.tasks import task_of
from imgcls_cli.tracking.api import Tracking
from imgcls_cli.tracking.base import RunInfo

log = logging.getLogger("imgcls")


def run_training(spec: TrainSpec, run_dir: str | Path, *, init: dict[str, Any] | None = None,
                 command: str | None = None) -> dict[str, Any]:
    """Train as the spec says, writing the run directory; returns summary.json's content.

    init is init=PATH's checkpoint when the command line has read it already; command is the command line as
    typed (summary.json records it). A resume that cannot carry over raises ResumeRefused, which holds the config
    the run was trained with (for config.yaml).
    """
    run = Run(spec.config, Path(run_dir), set(spec.explicit_keys), command)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: Any) -> None:
        if run.stop_signal:  # a second one: stop now
            raise KeyboardInterrupt
        run.stop_signal = signum
        log.warning(f"{signal.Signals(signum).name}: finishing this step, then writing last.pt "
                    "(again to stop at once)")

    if threading.current_thread() is threading.main_thread():
        for sig in previous:
            signal.signal(sig, on_signal)
    if run.main:
        run.tracking = open_tracking(spec, run, command)
    try:
        test = _fit(run, spec, init if init is not None or not spec.init else load_checkpoint(spec.init))
        run.tracking.end("completed", run.summary, test)
    except Interrupted as exc:
        _end(run, "interrupted", error=str(exc))
        if run.main:
            print(f"interrupted: {exc}; last.pt is saved. Continue with: imgcls train resume={run.run_dir}",
                  file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
    except KeyboardInterrupt:
        run.write_summary("interrupted")
        run.tracking.end("interrupted", run.summary)
        raise
    except DivergedError as exc:
        _end(run, "diverged", error=str(exc))
        raise
    except ResumeRefused:  # the run to continue is left as it was
        run.tracking.end(str(run_status(run.run_dir) or "failed"), run.summary)
        raise
    except BaseException as exc:
        _end(run, "failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        run.ctx.close()
    return run.summary


def open_tracking(spec: TrainSpec, run: Run, command: str | None) -> Tracking:
    """The run's trackers (tracking=mlflow|tensorboard, tensorboard=true); a backend that cannot start is one
    warning line."""
    if not spec.tracking.backends:
        return Tracking([])
    cfg = spec.config
    info = RunInfo(run.run_dir, cfg, command, spec.resume is not None, spec.model.name,
                   str(cfg["dataset"].get("name")), tuple(sorted(spec.explicit_keys)), spec.tracking, git_commit())
    return Tracking.open(info)


def _end(run: Run, status: str, **extra: Any) -> None:
    """A run that stopped before its end: summary.json says how, and report.html shows what it got to."""
    run.write_summary(status, **extra)
    if run.main:
        write_report_safely(run.run_dir, None, log, "Thumbnails: none, the run stopped before its test evaluation.")
    run.tracking.end(status, run.summary)


def _fit(run: Run, spec: TrainSpec, init: dict[str, Any] | None) -> dict[str, Any]:
    """Set up, train the epochs, test best.pt and report; the test split's metrics."""
    training = prepare(run, spec, init)
    run_epochs(run, training)
    return finish(run, training)


def finish(run: Run, t: Training) -> dict[str, Any]:
    """The summary's speed; on rank 0: the curves, best.pt on the test split, skipped files, the results (the
    test split's metrics, empty on other ranks)."""
    rows = t.state.rows
    rate = t.state.images_per_second()  # the run's rate; metrics.csv keeps each epoch's
    run.summary["train_images_per_second"] = round(rate if rate is not None else rows[-1]["images_per_second"], 1)
    if not run.main:  # rank 0 tests best.pt and reports
        return {}
    plot_curves(rows, run.run_dir / "plots" / "curves.png", best_epoch=run.summary.get("best_epoch"))
    if t.spec.task.multilabel:
        tune_thresholds(t, run.run_dir / "checkpoints")
    test_metrics = evaluate_best(t.state.model, run.run_dir, t.eval_loaders["test"], t.bundle, t.amp, t.spec.topk,
                                 t.spec.tta)
    run.summary["test_accuracy"] = test_metrics.get("accuracy")
    if "map_macro" in test_metrics:
        run.summary["test_map"] = test_metrics["map_macro"]
    streamed = [ld for ld in (t.train_loader, *t.eval_loaders.values()) if isinstance(ld, StreamLoader)]
    if streamed:  # bad files found while streaming
        found = {**{p: why for ld in streamed for p, why in ld.skipped.items()}, **dict(t.bundle.skipped)}
        write_skipped_files(run.run_dir, sorted(found.items()), log)
    run.write_summary("completed")
    _results_table(run, t.model_name, t.bundle.name, test_metrics, t.spec.topk)
    write_report_safely(run.run_dir, split_images(t.bundle.splits["test"]), log)
    return test_metrics


def evaluate_best(model: Any, run_dir: Path, loader: DeviceLoader, bundle: DatasetBundle, amp: Any,
                  topk: int, tta: str = "none") -> dict[str, Any]:
    """Load best.pt into the model and write the test split's reports into run_dir/eval (with test-time
    augmentation `tta`, as `imgcls eval tta=...`)."""
    if len(loader.labels) == 0:
        log.info("no test split (dataset.test_fraction=0): skipping the test evaluation")
        return {}
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    model.load_state_dict(best["state_dict"])
    test = bundle.splits["test"]
    extra = {"split": "test", "checkpoint": "checkpoints/best.pt", "epoch": best["epoch"], "tta": tta}
    predicted = predict(model, loader, amp, tta=tta, activation=task_of(best.get("task")).activation)
    probs, targets, ids = predicted.outputs.numpy(), predicted.targets.numpy(), read_ids(loader, test.ids)
    if is_multilabel(best):
        return labelsets.write_reports(run_dir / "eval", probs, targets, bundle.classes, best["thresholds"], ids,
                                       bundle.id_column, topk, extra)
    return write_eval_reports(run_dir / "eval", probs, targets, bundle.classes, ids, bundle.id_column, topk,
                              extra=extra, images=test.images.numpy() if test.in_memory else None)


def tune_thresholds(t: Training, folder: Path) -> None:
    """task=multilabel: best.pt's (and best_ema.pt's) thresholds, tuned on the validation split's probabilities
    with the checkpoint's weights (or threshold= as given)."""
    val = t.eval_loaders["val"]
    for name in ("best.pt", "best_ema.pt"):
        if not (folder / name).is_file():
            continue
        ckpt = load_checkpoint(folder / name)
        t.state.model.load_state_dict(ckpt["state_dict"])
        probs = targets = np.zeros((0, t.bundle.num_classes))  # no validation split: threshold= or 0.5 stays
        if len(val.labels):
            predicted = predict(t.state.model, val, t.amp, tta=t.spec.tta, activation=t.step_options.task.activation)
            probs, targets = predicted.outputs.numpy(), predicted.targets.numpy()
        labelsets.tune_and_save(folder / name, ckpt, probs, targets, t.spec.task.threshold)


def _results_table(run: Run, model_name: str, dataset: str, test: dict[str, Any], topk: int) -> None:
    s = run.summary
    rows = [("model", model_name), ("dataset", dataset), ("epochs", s.get("epochs_completed")),
            ("best epoch", s["best_epoch"]), ("best val accuracy", s["best_val_accuracy"])]
    multilabel = "map_macro" in test
    if multilabel:
        rows.append(("best val mAP", s.get("best_val_map")))
    names = {"accuracy": "test accuracy (subset)", "map_macro": "test mAP (macro)", "f1_micro": "test F1 (micro)",
             "f1_macro": "test F1 (macro)"} if multilabel else {"accuracy": "test accuracy"}
    rows += [(names.get(k, k.replace("_", " ")), test.get(k))
             for k in result_columns(topk, multilabel) if k != "loss" and (k in test or k == "accuracy")]
    if s.get("target_accuracy") is not None:
        rows.append(("target accuracy", s["target_accuracy"]))
    rows += [("wall seconds", s["wall_seconds"]), ("train images/s", s["train_images_per_second"]),
             ("device", f"{s['device']} ({s['precision']})")]
    out.show(out.table("Results", ["", "value"], rows))
