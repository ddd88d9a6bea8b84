"""The CUDA path, measured where a GPU is: training images/s and seconds per epoch of `imgcls train` for resnet18
in fp32 NCHW, under AMP + channels_last (what `precision=auto channels_last=auto` picks on CUDA) and with
torch.compile on top; then the fast recipes' accuracy and wall time.

    python benchmarks/gpu.py [--dataset fashion_mnist] [--epochs 3] [--recipes fashion_mnist_fast cifar10_fast]

Each run is the whole command, as a user types it; images/s and epoch seconds are the medians over the epochs
after the first (which pays for cuDNN autotuning and compilation). Prints a markdown table and the GPU.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

from machine import imgcls_train

VARIANTS = {
    "fp32, NCHW": ["precision=fp32", "channels_last=false"],
    "AMP + channels_last (auto)": [],
    "AMP + channels_last + compile": ["compile=true"],
}


def steady(run_dir: Path, column: str) -> float:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return statistics.median(float(r[column]) for r in (rows[1:] or rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--recipes", nargs="*", default=["fashion_mnist_fast", "cifar10_fast"])
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: this benchmark measures the GPU path")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}\n")
    print("| run | precision | test accuracy | images/s | epoch s | wall s |\n| --- | --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in VARIANTS.items():
            run_dir = Path(tmp) / name.replace(" ", "_").replace(",", "").replace("+", "")
            summary, wall = imgcls_train(["model=resnet18", f"dataset={args.dataset}", f"epochs={args.epochs}",
                                          f"batch_size={args.batch}", "device=cuda", *extra], run_dir=run_dir)
            print(f"| resnet18 {args.dataset}, {name} | {summary['precision']} | {summary['test_accuracy']:.4f} | "
                  f"{steady(run_dir, 'images_per_second'):,.0f} | {steady(run_dir, 'epoch_seconds'):.2f} | "
                  f"{wall:.1f} |", flush=True)
        for recipe in args.recipes:
            run_dir = Path(tmp) / recipe
            try:
                summary, wall = imgcls_train([f"+experiment={recipe}", "device=cuda"], run_dir=run_dir)
            except Exception as exc:  # e.g. CIFAR-10 not on this machine
                print(f"| {recipe} | | not run: {str(getattr(exc, 'stderr', exc) or exc).strip()[-80:]} | | | |")
                continue
            print(f"| +experiment={recipe} | {summary['precision']} | {summary['test_accuracy']:.4f} | "
                  f"{steady(run_dir, 'images_per_second'):,.0f} | {steady(run_dir, 'epoch_seconds'):.2f} | "
                  f"{wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
