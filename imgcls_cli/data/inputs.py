"""What a model takes as input (channels, size, mean, std) and the one place images are normalized to it."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class InputSpec:
    """A model's input: `channels` x `size` x `size` images, normalized per channel with `mean` and `std`
    (fractions of 255). It travels with the weights as a checkpoint's "input" entry."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> InputSpec:
        """The input a checkpoint's model was trained on (its "input" entry)."""
        return cls.from_dict(ckpt["input"])

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> InputSpec:
        return cls(int(entry["channels"]), int(entry["size"]), tuple(map(float, entry["mean"])),
                   tuple(map(float, entry["std"])))

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint's "input" entry: plain ints and lists."""
        return {"channels": self.channels, "size": self.size, "mean": list(self.mean), "std": list(self.std)}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as the model takes it (see normalize)."""
        return normalize(x, self.mean, self.std)

    def convert(self, x: torch.Tensor, source: InputSpec) -> torch.Tensor:
        """A batch normalized for `source` (another model's input) as this input: back to 0-1 pixels, resized
        (bilinear) to this size, then normalized with this mean and std (a distillation teacher's view of the
        student's batch). The division (not normalize's product) is what the teacher was trained on: its
        distilled students stay bitwise equal."""
        mean, std = _tensors(source.mean, source.std, x.device)
        x = x * std + mean
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean, std = _tensors(self.mean, self.std, x.device)
        return (x - mean) / std


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (0-255) or float (0-1) images -> (x - mean) * (1 / std) per channel, in float32 on x's device: how
    training, validation, eval and predict all normalize a batch."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean_t, inv_std = _stats(tuple(mean), tuple(std), x.device)
    return (x - mean_t).mul_(inv_std)


@functools.lru_cache(maxsize=32)
def _tensors(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """mean and std as (1, C, 1, 1) float32 tensors on the device, made once per device."""
    with torch.inference_mode(False):  # plain tensors, also when first made inside an inference_mode block
        return (torch.tensor(mean, device=device).view(1, -1, 1, 1),
                torch.tensor(std, device=device).view(1, -1, 1, 1))


@functools.lru_cache(maxsize=32)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """mean and 1 / std as (1, C, 1, 1) tensors on the device: a product per pixel is cheaper than a division."""
    m, s = _tensors(mean, std, device)
    with torch.inference_mode(False):
        return m, 1.0 / s
