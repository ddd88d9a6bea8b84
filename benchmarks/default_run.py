"""Time the default `imgcls train` (digits + simple_cnn) end to end, as a user runs it, over several seeds.

    python benchmarks/default_run.py [--seeds 0 1 2] [--extra key=value ...]

Prints a markdown table: seed, test accuracy, the command's wall seconds, training images/s.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from machine import cpu_name, imgcls_train


def machine() -> str:
    import torch

    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides, e.g. dataset=synthetic")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            summary, wall = imgcls_train([f"seed={seed}", *args.extra], run_dir=Path(tmp) / f"seed{seed}")
            rows.append((seed, summary["test_accuracy"], wall, summary["train_images_per_second"]))
    print(f"`imgcls train {' '.join(args.extra)}` on {machine()}\n")
    print("| seed | test accuracy | wall seconds | train images/s |\n| --- | --- | --- | --- |")
    for seed, acc, wall, ips in rows:
        print(f"| {seed} | {acc:.4f} | {wall:.1f} | {ips:.0f} |")
    print(f"| median | {statistics.median(r[1] for r in rows):.4f} | {statistics.median(r[2] for r in rows):.1f} | "
          f"{statistics.median(r[3] for r in rows):.0f} |")


if __name__ == "__main__":
    main()
