"""Batches for training and evaluation.

In memory (DeviceLoader): the whole split lives as one uint8 tensor on the device; a batch is an index slice.
Streaming (StreamLoader): DataLoader workers read each batch from a store; the device does the rest alike.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from imgcls_cli.cores import resolve_workers, usable_cores  # noqa: F401  (callers still import them here)
from imgcls_cli.data.augment import BatchAugment
from imgcls_cli.data.inputs import normalize
from imgcls_cli.data.stores import Store


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
        shard: tuple[int, int] = (0, 1),
        pad_shards: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        # Data-parallel training: this process takes every world-th sample of each epoch's order, from its rank on;
        # pad_shards repeats the first samples so that every rank has as many (as DistributedSampler does).
        self.rank, self.world = shard
        self.pad_shards = pad_shards
        self.batch_size, self.shuffle, self.augment, self.seed = batch_size, shuffle, augment, seed
        # A last batch of one would break batch norm in training; drop a short remainder only when asked.
        self.drop_last = drop_last and len(labels) > batch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.epoch = 0
        self._start: tuple[int, torch.Tensor | None] | None = None
        self.gen, self.next_batch = torch.Generator(), 0
        # Weighted sampling with replacement (dataset.sampler=balanced): an epoch is as many draws as images.
        self.sample_weights = None if sample_weights is None else sample_weights.double().cpu()

    def samples(self) -> int:
        """How many samples this process takes in an epoch (all of them in a single process)."""
        n = len(self.labels)
        if self.world == 1:
            return n
        return -(-n // self.world) if self.pad_shards else len(range(self.rank, n, self.world))

    def __len__(self) -> int:
        n = self.samples()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self, gen: torch.Generator) -> torch.Tensor | None:
        """This epoch's sample order (None: in storage order), drawn from the epoch's generator."""
        n = len(self.labels)
        if self.sample_weights is not None:
            return torch.multinomial(self.sample_weights, n, replacement=True, generator=gen)
        return torch.randperm(n, generator=gen) if self.shuffle else None

    def _shard(self, order: torch.Tensor | None) -> torch.Tensor | None:
        """This rank's part of the epoch's order (the order itself in a single process)."""
        if self.world == 1:
            return order
        n = len(self.labels)
        order = torch.arange(n) if order is None else order
        if self.pad_shards and n % self.world:
            order = torch.cat([order, order.repeat(self.world)[:self.world - n % self.world]])
        return order[self.rank::self.world]

    def _batches(self, order: torch.Tensor | None, start: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(batch index, uint8 images, labels) on the device, from batch `start` on."""
        n = len(self.labels) if order is None else len(order)
        order = order.to(self.images.device) if order is not None else None
        for b in range(start, len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:
                yield b, self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                yield b, self.images[idx], self.labels[idx]

    def start_at(self, batch: int, gen_state: torch.Tensor) -> None:
        """Make the next pass (of the epoch set with set_epoch) begin at `batch`, with the generator as it was
        there: a resumed run sees the very batches and augmentations the interrupted one would have."""
        self._start = (batch, gen_state)

    def position(self) -> dict[str, Any]:
        """Where the pass in progress is: the next batch and the generator's state (saved in last.pt)."""
        return {"batch": self.next_batch, "gen": self.gen.get_state()}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = self._shard(self._order(gen))
        if self.rank:  # the same order on every rank, then each rank's own augmentations
            gen.manual_seed((self.seed * 1_000_003 + self.epoch) * 1_009 + self.rank)
        start, self._start = (self._start or (0, None)), None
        if start[1] is not None:
            gen.set_state(start[1])
        self.gen, self.next_batch = gen, start[0]
        for b, x, y in self._batches(order, start[0]):
            x = x.float().div_(255)
            if self.augment:
                x = self.augment(x, gen)
            x = normalize(x, self.mean, self.std)
            self.next_batch = b + 1
            yield x.contiguous(memory_format=self.memory_format), y


class _EpochBatches:
    """The DataLoader's sampler: the index batches of the current epoch (persistent workers keep the loader)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _StoreBatches(torch.utils.data.Dataset):
    """One item is one whole batch, read from the store in a worker: (uint8 images, ok mask, positions)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getitem__(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, ok = self.store.load(positions)
        return torch.from_numpy(images), torch.from_numpy(ok), torch.from_numpy(positions)

    def __len__(self) -> int:
        return len(self.store)


def _worker_init(_: int) -> None:
    # Each worker decodes one batch; the cores are shared out between workers. OpenCV is left alone here: it runs
    # on the calling thread since data/decode.py loaded it, and touching its thread pool in a forked child hangs.
    torch.set_num_threads(1)


class StreamLoader(DeviceLoader):
    """DeviceLoader's batches and augmentation for images that are not in memory: DataLoader workers read each
    batch from a store (decoding files or reading the decoded cache), then it goes to the device whole.

    A file that does not decode is left out of its batch and listed in `skipped` (path, reason).
    """

    def __init__(self, store: Store, labels: torch.Tensor, batch_size: int, mean: list[float], std: list[float], *,
                 device: torch.device, num_workers: int = 0, **kwargs: Any) -> None:
        super().__init__(torch.empty(0, device=device), labels, batch_size, mean, std, **kwargs)
        self.store, self.device = store, device
        self.skipped: dict[str, str] = {}
        self.sampler = _EpochBatches()
        self.loader = torch.utils.data.DataLoader(
            _StoreBatches(store), sampler=self.sampler, batch_size=None, num_workers=num_workers,
            persistent_workers=num_workers > 0, pin_memory=device.type == "cuda",
            worker_init_fn=_worker_init if num_workers > 0 else None,
            prefetch_factor=4 if num_workers > 0 else None)

    def _batches(self, order: torch.Tensor | None, start: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        positions = order.numpy() if order is not None else np.arange(len(self.labels))
        n = len(positions)
        self.sampler.batches = [positions[b * self.batch_size:min((b + 1) * self.batch_size, n)]
                                for b in range(start, len(self))]
        labels = self.labels.cpu()
        for b, (images, ok, pos) in enumerate(self.loader, start):
            if not ok.all():
                for p in pos[~ok].tolist():
                    name = self.store.name(p)
                    if name not in self.skipped:
                        self.skipped[name] = self.store.why(p)
                images, pos = images[ok], pos[ok]
                if len(pos) == 0:
                    continue
            yield (b, images.to(self.device, non_blocking=True),
                   labels[pos].to(self.device, non_blocking=True))


def read_ids(loader: DeviceLoader, ids: list[str]) -> list[str]:
    """The ids of the samples an unshuffled loader yielded: all of them, less the files a stream could not read."""
    if not isinstance(loader, StreamLoader) or not loader.skipped:
        return ids
    return [i for p, i in enumerate(ids) if loader.store.name(p) not in loader.skipped]


def make_loader(images: torch.Tensor | Store, labels: torch.Tensor, batch_size: int, mean: list[float],
                std: list[float], *, device: torch.device, num_workers: int = 0, **kwargs: Any) -> DeviceLoader:
    """A DeviceLoader over images moved to the device, or a StreamLoader over a store."""
    if isinstance(images, torch.Tensor):
        return DeviceLoader(images.to(device), labels.to(device), batch_size, mean, std, **kwargs)
    return StreamLoader(images, labels, batch_size, mean, std, device=device, num_workers=num_workers, **kwargs)
