"""Domain adaptation, measured: source-only vs domain-adversarial target accuracy on shifted real images.

    python benchmarks/domain.py [--pairs digits:digits_inverted,fashion_mnist:fashion_mnist_noisy]
                                [--lambdas 0,1] [--seeds 0]

For each source:target pair, `imgcls train dataset=<source> domain.target=<target> domain.lambda=<λ>` for each λ
(λ = 0 is the source-only baseline: the same run, target images seen but no gradient reaching the encoder).
Target labels are used only to score the target's test split. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name, imgcls_train  # noqa: E402

SETTINGS = {  # per source dataset: enough to learn the source well in a few minutes on 2 CPU cores
    "digits": ["epochs=15"],
    "fashion_mnist": ["dataset.max_train_samples=5000", "dataset.max_eval_samples=2000", "epochs=8"],
}


def run(source: str, target: str, strength: str, seed: str, folder: Path) -> tuple[dict, float]:
    return imgcls_train(["model=simple_cnn", f"dataset={source}", *SETTINGS.get(source, []),
                         f"domain.target={target}", f"domain.lambda={strength}", f"seed={seed}"], run_dir=folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="digits:digits_inverted,fashion_mnist:fashion_mnist_noisy")
    parser.add_argument("--lambdas", default="0,1")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/imgcls-domain"))
    args = parser.parse_args()
    print(cpu_name())
    print("| source → target | domain.lambda | source test accuracy | target accuracy | s per run |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for pair in args.pairs.split(","):
        source, target = pair.split(":")
        for strength in args.lambdas.split(","):
            results = [run(source, target, strength, seed, args.workdir / f"{target}_l{strength}_s{seed}")
                       for seed in args.seeds.split(",")]
            src = statistics.mean(r["test_accuracy"] for r, _ in results)
            tgt = [r["target_accuracy"] for r, _ in results]
            seconds = statistics.mean(s for _, s in results)
            print(f"| {source} → {target} | {strength} | {src:.4f} | "
                  f"{statistics.mean(tgt):.4f}{' (' + ' / '.join(f'{t:.4f}' for t in tgt) + ')' if len(tgt) > 1 else ''}"
                  f" | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
