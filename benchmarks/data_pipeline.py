"""Images/s of the data pipeline alone (no model): batches of augmented, normalized float images.

    python benchmarks/data_pipeline.py [--images 6000] [--workers auto] [--epochs 2]

(a) imgcls in memory: one uint8 tensor, index-slice batches, batch-wise augmentation (DeviceLoader);
(b) imgcls streaming: an image folder decoded with OpenCV a batch at a time in DataLoader workers (StreamLoader);
(c) torchvision's usual way: a per-sample Dataset (PIL image per sample, as torchvision.datasets.FashionMNIST and
    ImageFolder give) + transforms.v2 with the same augmentations + DataLoader with the same workers.
On Fashion-MNIST's training images (a vs c) and on an image folder of half PNG, half JPEG files written from them
(b vs c). Same augmentations everywhere: flip, rotation 10 degrees, translation 10%, brightness and contrast 0.2.
Prints a markdown table and the machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from machine import cpu_name
from imgcls_cli.data.augment import build_augment
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.data.loader import DeviceLoader, make_loader, resolve_workers

BATCH = 128
AUGMENT = {"name": "bench", "hflip": {"p": 0.5}, "rotation": {"p": 0.5, "degrees": 10},
           "translate": {"p": 0.5, "fraction": 0.1}, "brightness": {"p": 0.5, "range": 0.2},
           "contrast": {"p": 0.5, "range": 0.2}}
MEAN, STD = [0.286], [0.353]


def torchvision_transform() -> v2.Compose:
    return v2.Compose([
        v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.RandomAffine(degrees=10)], p=0.5),
        v2.RandomApply([v2.RandomAffine(degrees=0, translate=(0.1, 0.1))], p=0.5),
        v2.RandomApply([v2.ColorJitter(brightness=0.2)], p=0.5),
        v2.RandomApply([v2.ColorJitter(contrast=0.2)], p=0.5),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD),
    ])


class ArrayDataset(torch.utils.data.Dataset):
    """As torchvision.datasets.FashionMNIST serves its images: one PIL image per sample, then the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels, self.transform = images, labels, torchvision_transform()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def timed(loader, epochs: int, set_epoch=None) -> float:
    """Images/s over `epochs` full passes, after one warm-up batch (workers started)."""
    next(iter(loader))
    seen, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        if set_epoch:
            set_epoch(epoch)
        for x, _ in loader:
            seen += len(x)
    return seen / (time.perf_counter() - start)


def write_folder(images: np.ndarray, labels: np.ndarray, root: Path) -> None:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / (f"{i}.png" if i % 2 else f"{i}.jpg")), image)


def machine() -> str:
    return f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, torchvision {torchvision.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000, help="images of the image folder (b, c)")
    parser.add_argument("--workers", default="auto", help="DataLoader workers for (b) and (c)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    workers = resolve_workers(args.workers)
    cpu = torch.device("cpu")
    cfg = {"name": "fashion_mnist", "image_size": 28, "channels": 1, "val_fraction": 0.0,
           "max_train_samples": None, "max_eval_samples": None}
    train = load_dataset(cfg, seed=0).splits["train"]
    images, labels = train.images[:, 0].numpy(), train.labels.numpy()
    augment = build_augment(AUGMENT)
    rows = []

    memory = DeviceLoader(train.images, train.labels, BATCH, MEAN, STD, shuffle=True, augment=augment)
    tv_memory = torch.utils.data.DataLoader(ArrayDataset(images, labels), BATCH, shuffle=True,
                                            num_workers=workers, persistent_workers=workers > 0)
    a, c = timed(memory, args.epochs, memory.set_epoch), timed(tv_memory, 1)
    rows += [("(a) imgcls in memory", f"Fashion-MNIST train, {len(labels):,} images", a, a / c),
             ("(c) torchvision per-sample", f"Fashion-MNIST train, {len(labels):,} images", c, 1.0)]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        write_folder(images[: args.images], labels[: args.images], root)
        folder_cfg = {"name": "imagefolder", "root": str(root), "image_size": 28, "channels": 1,
                      "val_fraction": 0.0, "test_fraction": 0.0, "in_memory": False, "max_train_samples": None,
                      "max_eval_samples": None}
        split = load_dataset(folder_cfg, seed=0).splits["train"]
        stream = make_loader(split.images, split.labels, BATCH, MEAN, STD, device=cpu, num_workers=workers,
                             shuffle=True, augment=augment)
        folder = torchvision.datasets.ImageFolder(str(root), transform=v2.Compose([v2.Grayscale(),
                                                                                   torchvision_transform()]))
        tv_stream = torch.utils.data.DataLoader(folder, BATCH, shuffle=True, num_workers=workers,
                                                persistent_workers=workers > 0)
        b, c2 = timed(stream, args.epochs, stream.set_epoch), timed(tv_stream, args.epochs)
    where = f"image folder, {args.images:,} PNG + JPEG files"
    rows += [("(b) imgcls streaming", where, b, b / c2), ("(c) torchvision ImageFolder", where, c2, 1.0)]

    print(f"{machine()}; batch {BATCH}, {workers} DataLoader worker(s)\n")
    print("| pipeline | data | images/s | vs (c) |\n| --- | --- | ---: | ---: |")
    for name, data, speed, ratio in rows:
        print(f"| {name} | {data} | {speed:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
