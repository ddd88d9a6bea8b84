"""AlexNet (Krizhevsky et al., 2012) as torchvision builds it, with a 3x3 stride-1 stem for small images."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from imgcls_cli.errors import UserError, as_int
from imgcls_cli.models._api import MODELS

WIDTHS = (64, 192, 384, 256, 256)
POOL_AFTER = (0, 1, 4)  # max-pools follow conv1, conv2 and conv5
IMAGENET_FROM = 64  # stem=auto: the 11x11/4 stem downsamples 32x; 63 px is the least that keeps all three pools


@dataclass(frozen=True)
class Stem:
    convs: tuple[tuple[int, int, int], ...]  # (kernel, stride, padding) of each of the five convs
    pool: int  # max-pool kernel; stride 2
    grid: int  # the classifier reads at most grid x grid cells per channel


STEMS = {
    "imagenet": Stem(((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1)), pool=3, grid=6),
    "small": Stem(((3, 1, 1),) * 5, pool=2, grid=3),  # 28 px: 28 -> 14 -> 7 -> 3
}


def _out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _lrn() -> nn.LocalResponseNorm:
    """The paper's response normalization: n=5, alpha=1e-4, beta=0.75, k=2."""
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


def _features(stem: Stem, in_channels: int, image_size: int, lrn: bool) -> tuple[nn.Sequential, int]:
    """The five convs with ReLU (+ LRN after conv1 and conv2) and max-pools; also the side of the map they leave.

    A pool is skipped when the map is already smaller than its kernel, so small inputs never collapse.
    """
    layers: list[nn.Module] = []
    size, ch = image_size, in_channels
    for i, (width, (kernel, stride, padding)) in enumerate(zip(WIDTHS, stem.convs)):
        size = _out(size, kernel, stride, padding)
        if size < 1:
            raise UserError(f"model.stem cannot take {image_size} px inputs: its conv{i + 1} leaves no pixels.")
        layers += [nn.Conv2d(ch, width, kernel, stride=stride, padding=padding), nn.ReLU(inplace=True)]
        if lrn and i < 2:
            layers.append(_lrn())
        if i in POOL_AFTER and size >= stem.pool:
            layers.append(nn.MaxPool2d(stem.pool, stride=2))
            size = _out(size, stem.pool, 2)
        ch = width
    return nn.Sequential(*layers), size


class AlexNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        stem: str = "auto",
        lrn: bool = False,
        hidden: int = 4096,
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        if stem == "auto":
            stem = "imagenet" if image_size >= IMAGENET_FROM else "small"
        if stem not in STEMS:
            raise UserError(f"model.stem must be auto, small or imagenet, not '{stem}'.")
        hidden = as_int(hidden, "model.hidden", 1)
        self.features, size = _features(STEMS[stem], in_channels, image_size, lrn)
        grid = min(STEMS[stem].grid, size)  # 6x6 at 224 px as torchvision; no upsampled copies of a small map
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(drop_rate),
            nn.Linear(WIDTHS[-1] * grid * grid, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@MODELS.register("alexnet")
def alexnet(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> AlexNet:
    return AlexNet(num_classes, in_channels, image_size, **kwargs)


# The last spatial feature map (what Grad-CAM explains: imgcls_cli.models.cam_layer reads it).
alexnet.cam_layer = "features"
