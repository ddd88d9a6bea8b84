"""Data-parallel training against one process: test accuracy and wall time of `imgcls train` in 1 process of
batch B and in N gloo processes of batch B / N (the same images per step), over seeds.

    python benchmarks/distributed.py [--seeds 0 1 2] [--nproc 2] [--batch 64] [--extra key=value ...]

Defaults: the default run (simple_cnn on digits, 10 epochs, batch norm), so the processes' own batch-norm
statistics are part of what is compared. Prints a markdown table and the machine.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from machine import cpu_name, imgcls_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides, e.g. dataset=fashion_mnist")
    args = parser.parse_args()
    setups = {f"1 process × {args.batch}": [f"batch_size={args.batch}"],
              f"{args.nproc} processes × {args.batch // args.nproc}": [f"batch_size={args.batch // args.nproc}",
                                                                     f"distributed.nproc={args.nproc}"]}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, setup in setups.items():
                run_dir = Path(tmp) / f"{len(results[name])}-{name.split()[0]}-{seed}"
                summary, wall = imgcls_train([*setup, f"seed={seed}", *args.extra], run_dir=run_dir)
                results[name].append((summary["test_accuracy"], wall))
    print(f"`imgcls train {' '.join(args.extra)}`, seeds {' '.join(map(str, args.seeds))}, gloo on {cpu_name()}\n")
    print("| setup | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean accuracy | median wall s |")
    print("| --- | " + " | ".join("---" for _ in args.seeds) + " | --- | --- |")
    for name, rows in results.items():
        accs = [a for a, _ in rows]
        print(f"| {name} | " + " | ".join(f"{a:.4f}" for a in accs) +
              f" | {statistics.mean(accs):.4f} | {statistics.median(w for _, w in rows):.1f} |")


if __name__ == "__main__":
    main()
