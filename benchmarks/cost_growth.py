"""How training cost grows with the dataset size and the image size, for one model.

    python benchmarks/cost_growth.py [--model simple_cnn] [--sizes 1000,10000,60000] [--pixels 28,64,128]
                                     [--steps 20]

Fashion-MNIST training images (resized to each image size, in memory as training keeps them), imgcls's own
training step (DeviceLoader + train_one_epoch, batch 64, Adam, precision=auto, channels_last=auto). For each
(dataset size, image size): images/s over `--steps` steps taken from a shuffled epoch of that dataset, after two
warm-up steps, and the epoch time it gives (dataset size / images/s). A per-sample overhead would show as
images/s falling with the dataset size at a fixed image size; the compute per image grows with the pixels.
Prints a markdown table and the machine.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import auto_settings, cpu_name  # noqa: E402

from imgcls_cli.data.datasets import load_dataset  # noqa: E402
from imgcls_cli.data.loader import make_loader  # noqa: E402
from imgcls_cli.engine.device import autocast  # noqa: E402
from imgcls_cli.engine.fit import train_one_epoch  # noqa: E402
from imgcls_cli.models import create_model  # noqa: E402


def images_per_second(model_name: str, size: int, pixels: int, steps: int) -> float:
    device, precision, channels_last, _ = auto_settings()
    cfg = {"name": "fashion_mnist", "image_size": pixels, "channels": 1, "val_fraction": 0.0,
           "max_train_samples": size, "in_memory": True}
    bundle = load_dataset(cfg, seed=0)
    train = bundle.splits["train"]
    loader = make_loader(train.images, train.labels, 64, bundle.mean, bundle.std, device=device, shuffle=True,
                         drop_last=True, seed=0, num_workers=0, channels_last=channels_last)
    model = create_model(model_name, num_classes=10, in_channels=1, image_size=pixels).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    amp = lambda: autocast(device, precision)  # noqa: E731
    loss = torch.nn.CrossEntropyLoss()
    loader.set_epoch(1)
    batches = iter(loader)
    train_one_epoch(model, itertools.islice(batches, 2), optimizer, scheduler, loss, amp)  # warm-up
    start = time.perf_counter()
    result = train_one_epoch(model, itertools.islice(batches, steps), optimizer, scheduler, loss, amp)
    return result.images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--sizes", default="1000,10000,60000")
    parser.add_argument("--pixels", default="28,64,128")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    pixels = [int(p) for p in args.pixels.split(",")]
    print(f"{cpu_name()}; {args.model}, batch 64; {auto_settings()[1]}")
    print("| images | " + " | ".join(f"{p} px: images/s | {p} px: epoch s" for p in pixels) + " |")
    print("| ---: | " + " | ".join("---: | ---:" for _ in pixels) + " |")
    for size in sizes:
        cells = []
        for p in pixels:
            rate = images_per_second(args.model, size, p, args.steps)
            cells.append(f"{rate:.0f} | {size / rate:.1f}")
        print(f"| {size:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
