"""Multi-label training on fashion_mnist_mosaic (2x2 mosaics of Fashion-MNIST items): test mAP and micro-F1 of
`imgcls train +experiment=fashion_mnist_mosaic_fast` (resnet9) and of simple_cnn, each whole command timed; and a
per-item baseline: a single-label Fashion-MNIST model applied to each cell of the test mosaics.

    python benchmarks/multilabel.py [--seed 0] [--baseline CHECKPOINT] [--skip-recipes]

The baseline is an upper-bound style check: it sees each item alone, in its cell, and knows which cells are empty
(black); a mosaic's probability of label c is 1 - prod over its items of (1 - p_item(c)). Its checkpoint is
trained here with `imgcls train +experiment=fashion_mnist_fast` unless --baseline names one. Results go to
benchmarks/results/multilabel.json and are printed as a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from machine import cpu_name  # noqa: E402

RUNS = {  # name: overrides after `imgcls train`
    "resnet9 (+experiment=fashion_mnist_mosaic_fast)": ["+experiment=fashion_mnist_mosaic_fast"],
    "simple_cnn (the recipe, model=simple_cnn)": ["+experiment=fashion_mnist_mosaic_fast", "model=simple_cnn",
                                                  "model.widths=[16,32,64]", "model.hidden=128"],
}


def train(overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    """The whole `imgcls train` command's seconds and its run's eval/metrics.json."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "imgcls_cli", "train", *overrides, f"hydra.run.dir={run_dir}"],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return seconds, json.loads((run_dir / "eval" / "metrics.json").read_text())


def per_item_baseline(checkpoint: Path, seed: int) -> dict:
    """The single-label checkpoint on each non-empty cell of the test mosaics, combined into label sets."""
    from imgcls_cli.api import load_model
    from imgcls_cli.data.datasets import load_dataset
    from imgcls_cli.multilabel.metrics import multilabel_metrics

    bundle = load_dataset({"name": "fashion_mnist_mosaic"}, seed, task="multilabel")
    test = bundle.splits["test"]
    images, targets = test.images.numpy()[:, 0], test.labels.numpy()
    model = load_model(checkpoint)
    order = [model.classes.index(c) for c in bundle.classes]
    cells = [images[:, r:r + 28, c:c + 28] for r in (0, 28) for c in (0, 28)]
    absent = np.ones((len(images), len(bundle.classes)))
    for cell in cells:
        filled = cell.reshape(len(cell), -1).max(1) > 0
        entries = model.predict(list(cell[filled]), topk=len(model.classes), batch_size=512)
        probs = np.zeros((len(entries), len(model.classes)))
        for i, entry in enumerate(entries):
            for top in entry["topk"]:
                probs[i, model.classes.index(top["label"])] = top["probability"]
        absent[filled] *= 1 - probs[:, order]
    metrics = multilabel_metrics(1 - absent, targets, np.full(len(bundle.classes), 0.5))
    return {"map_macro": metrics["map_macro"], "f1_micro": metrics["f1_micro"], "images": len(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", type=Path, help="a single-label Fashion-MNIST checkpoint (else trained here)")
    parser.add_argument("--skip-recipes", action="store_true")
    args = parser.parse_args()
    import torch

    results = {"machine": cpu_name(), "torch": torch.__version__, "seed": args.seed, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="imgcls-multilabel-") as scratch:
        for name, overrides in ({} if args.skip_recipes else RUNS).items():
            seconds, m = train([*overrides, f"seed={args.seed}"], Path(scratch) / str(len(results["runs"])))
            results["runs"][name] = {"seconds": round(seconds, 1), "map_macro": m["map_macro"],
                                     "f1_micro": m["f1_micro"], "subset_accuracy": m["subset_accuracy"]}
            print(name, results["runs"][name], flush=True)
        checkpoint = args.baseline
        if checkpoint is None:
            seconds, m = train(["+experiment=fashion_mnist_fast", f"seed={args.seed}"], Path(scratch) / "single")
            checkpoint = Path(scratch) / "single" / "checkpoints" / "best.pt"
            results["baseline_training"] = {"seconds": round(seconds, 1), "test_accuracy": m["accuracy"]}
        results["baseline"] = per_item_baseline(checkpoint, args.seed)
        print("per-item baseline", results["baseline"], flush=True)
    out = HERE / "results" / "multilabel.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['machine']}, torch {results['torch']}, seed {args.seed}\n")
    print("| model | test mAP (macro) | test micro-F1 | whole command |\n| --- | --- | --- | --- |")
    for name, r in results["runs"].items():
        print(f"| {name} | {r['map_macro']:.4f} | {r['f1_micro']:.4f} | {r['seconds']:.0f} s |")
    b = results["baseline"]
    print(f"| per-item baseline (single-label model on each cell) | {b['map_macro']:.4f} | {b['f1_micro']:.4f} | |")


if __name__ == "__main__":
    main()
