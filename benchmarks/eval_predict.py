"""Inference images/s of imgcls's eval path vs a bare `model.eval()` + `torch.inference_mode()` loop.

    python benchmarks/eval_predict.py [--images 10000] [--model simple_cnn] [--repeats 3]

Both run the same model (random weights; speed does not depend on them) on the same Fashion-MNIST test images
(digits when Fashion-MNIST is not installed), batch 512 (the default eval_batch_size), with the same precision
and memory format that `imgcls eval` picks (precision=auto, channels_last=auto):
  imgcls  engine/inference.py's predict_probs over the in-memory DeviceLoader (uint8 -> float, normalize, softmax)
  bare    the images already normalized as one float tensor, sliced into batches, model(x) only.
The target: imgcls >= 0.95x bare. Best of --repeats passes each, the passes alternating. Prints a markdown table and the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch
from machine import auto_settings, cpu_name

from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.data.loader import DeviceLoader
from imgcls_cli.engine.device import autocast
from imgcls_cli.engine.inference import predict_probs
from imgcls_cli.models import create_model

BATCH = 512


def test_images(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    for name in ("fashion_mnist", "digits"):
        cfg = {"name": name, "image_size": 28, "channels": 1, "val_fraction": 0.1, "test_fraction": 0.3,
               "max_train_samples": None, "max_eval_samples": n}
        with contextlib.suppress(Exception):  # Fashion-MNIST not installed: digits
            split = load_dataset(cfg, seed=0).splits["test"]
            return split.images, split.labels, name
    raise SystemExit("no dataset")


def best_rates(fns, n: int, repeats: int) -> list[float]:
    """Images/s of each function, best of `repeats` passes; the passes alternate between the functions, so a
    slower or faster spell of a shared machine falls on all of them alike."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return [n / t for t in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    images, labels, dataset = test_images(args.images)
    n = len(labels)
    device, precision, channels_last, fmt = auto_settings()
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=10, in_channels=1, image_size=28).to(device, memory_format=fmt)
    model.eval()
    mean, std = [0.286], [0.353]
    amp = lambda: autocast(device, precision)  # noqa: E731

    loader = DeviceLoader(images.to(device), labels.to(device), BATCH, mean, std, channels_last=channels_last)
    x_all = ((images.float() / 255 - mean[0]) / std[0]).to(device).contiguous(memory_format=fmt)

    @torch.inference_mode()
    def bare() -> None:
        for lo in range(0, n, BATCH):
            with amp():
                model(x_all[lo:lo + BATCH])

    ours, theirs = best_rates([lambda: predict_probs(model, loader, amp), bare], n, args.repeats)
    cpu = cpu_name()
    print(f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}; {args.model} on {n:,} {dataset} "
          f"test images, batch {BATCH}, {device} {precision}{' channels_last' if channels_last else ''}\n")
    print("| path | images/s | vs bare |\n| --- | ---: | ---: |")
    print(f"| imgcls eval (predict_probs + DeviceLoader) | {ours:,.0f} | {ours / theirs:.2f}x |")
    print(f"| bare model.eval() + inference_mode loop | {theirs:,.0f} | 1.00x |")


if __name__ == "__main__":
    main()
