"""Transfer learning, measured: pretrain on Fashion-MNIST, then learn digits from 10% of its labels.

    python benchmarks/transfer.py [--seeds 0,1,2] [--workdir /tmp/imgcls-transfer]

1. `imgcls train model=simple_cnn dataset=fashion_mnist` (a 20,000-image subset, 3 epochs): the pretrained model.
2. On digits with 117 of its 1,169 training images (10%, stratified), each variant as a seed sweep:
   from scratch, fine-tuned (init=, also with a slower encoder), frozen encoder (finetune.freeze=encoder), and
   L2-SP (finetune.l2sp).
Prints a markdown table of test accuracy (mean ± std over the seeds) and wall time per run.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name, imgcls_train  # noqa: E402

PRETRAIN = ["model=simple_cnn", "dataset=fashion_mnist", "dataset.max_train_samples=20000",
            "dataset.max_eval_samples=2000", "epochs=3"]
# 10% of digits' labels; the pretrained model's 28x28 inputs for every variant (init= picks them by itself).
FEW_LABELS = ["model=simple_cnn", "dataset=digits", "dataset.max_train_samples=117", "dataset.image_size=28",
              "batch_size=32", "epochs=50"]


def sweep(name: str, extra: list[str], seeds: str, workdir: Path) -> tuple[list[float], float]:
    folder = workdir / name
    _, seconds = imgcls_train(["-m", *FEW_LABELS, *extra, f"seed={seeds}", f"hydra.sweep.dir={folder}"], workdir)
    with open(folder / "summary.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["job"].isdigit()]
    return [float(r["test_accuracy"]) for r in rows], seconds / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/imgcls-transfer"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pre_dir = args.workdir / "pretrain"
    _, pre_seconds = imgcls_train(PRETRAIN, args.workdir, run_dir=pre_dir)
    init = f"init={pre_dir / 'checkpoints' / 'best.pt'}"
    variants = {
        "from scratch": [],
        "fine-tuned (init=)": [init],
        "fine-tuned, encoder at lr × 0.1 (finetune.encoder_lr_mult=0.1)": [init, "finetune.encoder_lr_mult=0.1"],
        "frozen encoder (finetune.freeze=encoder)": [init, "finetune.freeze=encoder"],
        "frozen encoder, optimizer.lr=0.01": [init, "finetune.freeze=encoder", "optimizer.lr=0.01"],
        "L2-SP (finetune.l2sp=0.01)": [init, "finetune.l2sp=0.01"],
        "L2-SP (finetune.l2sp=0.1)": [init, "finetune.l2sp=0.1"],
    }
    print(f"{cpu_name()}; pretraining on Fashion-MNIST took {pre_seconds:.0f} s")
    print("| digits, 10% of the labels | test accuracy (mean ± std) | per seed | s per run |")
    print("| --- | ---: | --- | ---: |")
    for i, (name, extra) in enumerate(variants.items()):
        accuracies, seconds = sweep(f"variant{i}", extra, args.seeds, args.workdir)
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(f"| {name} | {statistics.mean(accuracies):.4f} ± {spread:.4f} | "
              f"{' / '.join(f'{a:.4f}' for a in accuracies)} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
