"""Exported models against PyTorch eager on the CPU: ONNX Runtime fp32 and int8 and torch.export's .pt2, their speed
at batch 64 and batch 1, and what int8 costs in test accuracy.

    python benchmarks/export.py [--models simple_cnn resnet18 efficientnet_b0] [--speed-dataset fashion_mnist]
                                [--accuracy fashion_mnist fashion_mnist_fast digits digits_fast] [--reuse]

Each checkpoint is trained by `imgcls train` (as a user runs it) and exported by imgcls's own export code
(imgcls_cli.export.run.run_export: format=all quantize=int8, every file verified against the checkpoint). Then:
  speed     on the checkpoint's own test images (--speed-dataset, at the size `imgcls train` gives the model: the
            dataset's, or the model's own where it asks for one, as efficientnet_b0 does for 224 px), torch and ONNX
            Runtime both set to the machine's cores: images/s at batch 64 (best of --passes passes, the paths taking
            turns) and the p50/p99 latency of --calls single-image calls (in --rounds turns), for
              eager   imgcls eval's forward (engine/predictor.py) with the model prepared as eval prepares it
                      (precision=auto, channels_last=auto)
              onnx    the ONNX Runtime session `imgcls eval checkpoint=model.onnx` loads, fed numpy as ONNX Runtime
                      alone is; int8: the same for model.int8.onnx (static QDQ)
              pt2     torch.export.load(path).module(), fp32
            A speed model's weights are those of an --accuracy run of the same model and dataset where there is one,
            else from a short training (--speed-train-images images, 1 epoch): the weights do not change the speed.
  accuracy  `imgcls eval` (run_eval, tta=none) of the .pt, the .onnx, the .int8.onnx and the .pt2 on the whole test
            split of each --accuracy run.
Goals on 2 CPU cores: ONNX Runtime fp32 batch-1 p50 <= 0.5x eager's; int8 >= 1.5x fp32 ONNX Runtime's images/s at
batch 64, losing <= 0.5 point of test accuracy. Prints the machine and method on one line, then one markdown table.
--reuse keeps the trained runs and their exports (keyed by their settings and this source tree) for the next call.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from machine import cpu_name, imgcls_train

import imgcls_cli
from imgcls_cli.checkpoint import load_checkpoint
from imgcls_cli.cores import usable_cores
from imgcls_cli.engine.device import auto_precision_for_model, resolve_precision
from imgcls_cli.engine.inference import run_eval
from imgcls_cli.engine.predictor import forward, prepare
from imgcls_cli.export import pt2
from imgcls_cli.export.images import load_images
from imgcls_cli.export.run import run_export
from imgcls_cli.export.runtime import load_for_inference
from imgcls_cli.paths import CONF_DIR
from imgcls_cli.specs.eval import EvalSpec
from imgcls_cli.specs.export import ExportSpec

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(imgcls_cli.__file__).resolve().parent
BATCH = 64
CPU = torch.device("cpu")
PATHS = ("eager", "onnx", "int8", "pt2")
COLUMNS = ("PyTorch eager (eval)", "ONNX Runtime fp32", "ONNX Runtime int8", ".pt2 (torch.export)")
# --accuracy names: (the table's label, `imgcls train` arguments)
ACCURACY: dict[str, tuple[str, list[str]]] = {
    "fashion_mnist": ("Fashion-MNIST, simple_cnn 3 epochs", ["model=simple_cnn", "dataset=fashion_mnist", "epochs=3"]),
    "fashion_mnist_fast": ("Fashion-MNIST, fashion_mnist_fast (resnet9)", ["+experiment=fashion_mnist_fast"]),
    "digits": ("digits, the default run (simple_cnn)", []),
    "digits_fast": ("digits, digits_fast (resnet9)", ["+experiment=digits_fast"]),
}
LATENCY_GOAL, INT8_SPEED_GOAL, INT8_LOSS_GOAL = 0.5, 1.5, 0.5  # x eager p50; x fp32 images/s; points of accuracy


@dataclass
class Trained:
    """A training run and the files imgcls export made of it."""

    run_dir: Path
    best: Path
    files: dict[str, Path]  # PATHS -> file ("eager": best.pt)
    model: str
    dataset: str
    note: str


# --------------------------------------------------------------------------------------------- runs and exports
def source_digest() -> str:
    """What a kept run depends on: imgcls's code and configs, torch, the CPU."""
    digest = hashlib.sha256(f"{torch.__version__} {cpu_name()}".encode())
    for folder, pattern in ((PACKAGE, "*.py"), (CONF_DIR, "*.yaml")):
        for path in sorted(folder.rglob(pattern)):
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def train_and_export(args: list[str], note: str, workdir: Path, calibration: int, digest: str) -> Trained:
    """`imgcls train ARGS` and `imgcls export format=all quantize=int8` of its best.pt, in workdir/<key>; a run and
    export already there for the same arguments and source tree is used as it is."""
    key = hashlib.sha256(json.dumps([args, calibration, digest]).encode()).hexdigest()[:16]
    run_dir = workdir / key
    export_dir = run_dir / "export"
    if not (export_dir / "export.json").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run of these settings: again, from the start
        try:
            imgcls_train(args, cwd=ROOT, run_dir=run_dir)
        except subprocess.CalledProcessError as exc:
            last = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
            raise SystemExit(f"imgcls train {' '.join(args)} failed: {' '.join(last)}") from None
        best = run_dir / "checkpoints" / "best.pt"
        export_dir.mkdir()
        spec = ExportSpec(str(best), ("onnx", "torch_export"), "int8", calibration)
        with contextlib.redirect_stdout(io.StringIO()):  # export's own table: this script prints one
            run_export(spec, export_dir)
    report = json.loads((export_dir / "export.json").read_text())
    kinds = {("onnx", "none"): "onnx", ("torch_export", "none"): "pt2"}
    files = {kinds.get((e["format"], e["quantize"]), "int8"): Path(e["path"]) for e in report["files"]}
    best = Path(report["source"])
    ckpt = load_checkpoint(best)
    return Trained(run_dir, best, {"eager": best, **files}, str(ckpt["model"]["name"]),
                   str(ckpt["config"]["dataset"]["name"]), note)


# --------------------------------------------------------------------------------------------- speed
@dataclass
class Runner:
    """One way to run a model: call(x) on inputs made by make(normalized float32 NCHW images)."""

    call: Callable[[Any], Any]
    make: Callable[[torch.Tensor], Any]


def speed_paths(trained: Trained) -> tuple[dict[str, Runner], str]:
    """The four ways to run a trained model, and the precision eval's eager path runs it in."""
    ckpt, model = load_for_inference(trained.best, CPU)
    resolved = resolve_precision("auto", CPU)
    precision = auto_precision_for_model(resolved, "auto", CPU, model)
    model, amp, channels_last = prepare(model, ckpt["config"], CPU, "auto", resolved)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    paths = {"eager": Runner(lambda x: forward(model, x, amp, logits=True), lambda x: x.contiguous(memory_format=fmt))}
    for name in ("onnx", "int8"):
        _, onnx_model = load_for_inference(trained.files[name], CPU)
        session, feed, out = onnx_model.session, onnx_model.input_name, [onnx_model.output_name]
        threads = session.get_session_options().intra_op_num_threads
        if threads != torch.get_num_threads():
            raise SystemExit(f"ONNX Runtime runs {threads} intra-op threads, torch {torch.get_num_threads()}")
        paths[name] = Runner(lambda x, s=session, f=feed, o=out: s.run(o, {f: x}),
                            lambda x: np.ascontiguousarray(x.numpy(), dtype=np.float32))
    program = pt2.load(trained.files["pt2"])
    paths["pt2"] = Runner(program, lambda x: x.contiguous())
    return paths, precision + (" channels_last" if channels_last else "")


def throughput(paths: dict[str, Runner], images: torch.Tensor, seconds: float, passes: int) -> dict[str, float]:
    """Images/s at batch BATCH of each path: the best of `passes` passes of about `seconds` each, the paths taking
    turns so that a busier spell of a shared machine falls on all of them."""
    batches = {n: [p.make(images[i:i + BATCH]) for i in range(0, len(images) - BATCH + 1, BATCH)]
               for n, p in paths.items()}
    steps, best = {}, {}
    for name, path in paths.items():  # warm-up; batches per pass
        path.call(batches[name][0])
        start = time.perf_counter()
        path.call(batches[name][0])
        steps[name], best[name] = max(1, math.ceil(seconds / max(time.perf_counter() - start, 1e-6))), math.inf
    for _ in range(passes):
        for name, path in paths.items():
            start = time.perf_counter()
            for i in range(steps[name]):
                path.call(batches[name][i % len(batches[name])])
            best[name] = min(best[name], (time.perf_counter() - start) / steps[name])
    return {name: BATCH / t for name, t in best.items()}


def latency(paths: dict[str, Runner], images: torch.Tensor, calls: int, rounds: int) -> dict[str, tuple[float, float]]:
    """(p50, p99) milliseconds of single-image calls: `calls` per path, in `rounds` turns of the paths."""
    singles = {n: [p.make(images[i:i + 1]) for i in range(len(images))] for n, p in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for name, path in paths.items():
        for x in singles[name][:10]:
            path.call(x)
    per_round = max(1, math.ceil(calls / rounds))
    for r in range(rounds):
        for name, path in paths.items():
            for i in range(r * per_round, (r + 1) * per_round):
                x = singles[name][i % len(singles[name])]
                start = time.perf_counter_ns()
                path.call(x)
                times[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: (float(np.percentile(t, 50)), float(np.percentile(t, 99))) for name, t in times.items()}


def speed_rows(name: str, trained: Trained, args: argparse.Namespace) -> tuple[list[list[str]], str]:
    """A speed model's rows: images/s, p50, p99, the latency ratio and its goal, the int8 speed-up and its goal."""
    paths, precision = speed_paths(trained)
    ckpt = load_checkpoint(trained.best)
    verify, _ = load_images(ckpt, str(trained.best), 0)  # the images imgcls export checked the files on
    images = verify.images.repeat(math.ceil(BATCH / len(verify.images)), 1, 1, 1)  # at least one batch
    size = f"{ckpt['input']['channels']}x{ckpt['input']['size']}x{ckpt['input']['size']}"
    with torch.inference_mode():
        rates = throughput(paths, images, args.seconds, args.passes)
        ms = latency(paths, images, args.calls, args.rounds)
    ratio = {p: ms[p][0] / ms["eager"][0] for p in PATHS}
    speedup = rates["int8"] / rates["onnx"]
    rows = [[name, f"images/s, batch {BATCH}", *(f"{rates[p]:,.0f}" for p in PATHS), "", ""],
            [name, "latency p50 ms, batch 1", *(f"{ms[p][0]:.3f}" for p in PATHS), "", ""],
            [name, "latency p99 ms, batch 1", *(f"{ms[p][1]:.3f}" for p in PATHS), "", ""],
            [name, "p50 ÷ eager p50", *(f"{ratio[p]:.2f}x" for p in PATHS),
             f"ONNX Runtime fp32 ≤ {LATENCY_GOAL:.2f}x", met(ratio["onnx"] <= LATENCY_GOAL)],
            [name, "images/s ÷ ONNX Runtime fp32", "", "1.00x", f"{speedup:.2f}x", "",
             f"int8 ≥ {INT8_SPEED_GOAL:.2f}x", met(speedup >= INT8_SPEED_GOAL)]]
    return rows, f"{name}: {size} {verify.dataset}, {precision}, {trained.note}"


def met(ok: bool) -> str:
    return "met" if ok else "not met"


# --------------------------------------------------------------------------------------------- accuracy
def eval_accuracy(path: Path, out_dir: Path) -> tuple[float, int]:
    """(accuracy, images) of `imgcls eval checkpoint=PATH device=cpu` on the checkpoint's test split."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # eval's own table
        metrics = run_eval(EvalSpec(checkpoints=(str(path),), device="cpu"), out_dir)
    return float(metrics["accuracy"]), int(metrics["num_samples"])


def accuracy_rows(label: str, trained: Trained) -> list[list[str]]:
    """An accuracy run's rows: the test accuracy of each file, int8's loss against fp32 ONNX and its goal."""
    scored = {p: eval_accuracy(trained.files[p], trained.run_dir / "benchmark-eval" / p) for p in PATHS}
    loss = (scored["onnx"][0] - scored["int8"][0]) * 100
    return [[label, f"test accuracy ({scored['onnx'][1]:,} images)", *(f"{scored[p][0]:.4f}" for p in PATHS), "", ""],
            [label, "int8 accuracy loss, points", "", "", f"{loss:.2f}", "", f"≤ {INT8_LOSS_GOAL:.2f}",
             met(loss <= INT8_LOSS_GOAL)]]


# --------------------------------------------------------------------------------------------- the table
def speed_args(model: str, dataset: str, images: int) -> list[str]:
    return [f"model={model}", f"dataset={dataset}", f"dataset.max_train_samples={images}",
            "dataset.max_eval_samples=256", "epochs=1"]


def measure(args: argparse.Namespace, workdir: Path) -> tuple[list[list[str]], list[str]]:
    """Every row, and a note on each speed model (its input, eager precision and weights)."""
    digest = source_digest()

    def run(train_args: list[str], note: str) -> Trained:
        return train_and_export([*train_args, *args.extra], note, workdir, args.calibration_samples, digest)

    accuracy = {name: run(ACCURACY[name][1], ACCURACY[name][0]) for name in args.accuracy}
    rows, notes = [], []
    for model in args.models:
        trained = next((t for t in accuracy.values() if (t.model, t.dataset) == (model, args.speed_dataset)), None)
        if trained is None:
            trained = run(speed_args(model, args.speed_dataset, args.speed_train_images),
                          f"weights from 1 epoch on {args.speed_train_images:,} images")
        else:
            trained = replace(trained, note=f"the weights of '{trained.note}'")
        model_rows, note = speed_rows(model, trained, args)
        rows += model_rows
        notes.append(note)
    for name, trained in accuracy.items():
        rows += accuracy_rows(ACCURACY[name][0], trained)
    return rows, notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["simple_cnn", "resnet18", "efficientnet_b0"])
    parser.add_argument("--speed-dataset", default="fashion_mnist")
    parser.add_argument("--speed-train-images", type=int, default=1000)
    parser.add_argument("--accuracy", nargs="*", choices=sorted(ACCURACY), default=list(ACCURACY))
    parser.add_argument("--extra", nargs="*", default=[], help="more `imgcls train` overrides for every run")
    parser.add_argument("--calibration-samples", type=int, default=512, help="imgcls export's, for int8")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one batch-64 pass")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000, help="single-image calls per path")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the trained and exported runs in the temp folder and use them again")
    args = parser.parse_args(argv)
    try:
        import onnxruntime
    except ImportError:
        raise SystemExit("benchmarks/export.py needs the export extra: pip install 'imgcls[export]'") from None
    cores = usable_cores()
    torch.set_num_threads(cores)  # and so ONNX Runtime's intra_op threads: eval's loader gives it torch's count
    with contextlib.ExitStack() as stack:
        if args.reuse:
            workdir = Path(tempfile.gettempdir()) / "imgcls-benchmark-export"
            workdir.mkdir(exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imgcls-benchmark-export-")))
        rows, notes = measure(args, workdir)
    print(f"{cpu_name()}, {cores} cores: torch {torch.__version__} (set_num_threads({cores})), ONNX Runtime "
          f"{onnxruntime.__version__} (CPU, intra_op_num_threads={cores}, as imgcls eval loads an .onnx); eager is "
          f"imgcls eval's forward at precision=auto; speed models: {'; '.join(notes) or 'none'}; int8: imgcls export "
          f"quantize=int8 (static QDQ, {args.calibration_samples} calibration images); images/s: best of "
          f"{args.passes} pass(es) of ~{args.seconds:g} s; latency: {args.calls} calls; accuracy: imgcls eval "
          "(tta=none; the .pt at precision=auto) of each file on the whole test split\n")
    header = ["model", "measure", *COLUMNS, "goal", "met"]
    print("| " + " | ".join(header) + " |\n| --- | --- | " + " | ".join("---:" for _ in COLUMNS) + " | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
