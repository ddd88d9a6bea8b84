"""In-memory batches: the whole split lives as one uint8 tensor on the device; a batch is an index slice."""
from __future__ import annotations

from typing import Iterator

import torch

from imgcls_cli.data.augment import BatchAugment


class DeviceLoader:
    """Yields normalized float batches (and labels) from uint8 images already on the training device.

    Shuffling (or weighted sampling) and augmentation draw from a CPU generator seeded by (seed, epoch): the data
    order of an epoch is a pure function of both, on any device.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: list[float],
        std: list[float],
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: BatchAugment | None = None,
        seed: int = 0,
        channels_last: bool = False,
        sample_weights: torch.Tensor | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.augment, self.seed = batch_size, shuffle, augment, seed
        # A last batch of one would break batch norm in training; drop a short remainder only when asked.
        self.drop_last = drop_last and len(labels) > batch_size
        device = images.device
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.epoch = 0
        # Weighted sampling with replacement (dataset.sampler=balanced): an epoch is as many draws as images.
        self.sample_weights = None if sample_weights is None else sample_weights.double().cpu()

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.labels)
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, n, replacement=True, generator=gen)
        else:
            order = torch.randperm(n, generator=gen) if self.shuffle else None
        order = order.to(self.images.device) if order is not None else None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.images[idx], self.labels[idx]
            x = x.float().div_(255)
            if self.augment:
                x = self.augment(x, gen)
            x = (x - self.mean).mul_(self.inv_std)
            yield x.contiguous(memory_format=self.memory_format), y
