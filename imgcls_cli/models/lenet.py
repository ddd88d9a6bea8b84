"""LeNet-5 (LeCun et al., 1998): two 5x5 conv + pool stages and a 120-84 MLP; tanh and average pooling by default."""
from __future__ import annotations

import math

import torch
from torch import nn

from imgcls_cli.models._api import MODELS
from imgcls_cli.models.layers import ACTIVATIONS, choice

POOLS: dict[str, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}

PAPER_SIZE = 32  # the paper's input side: conv1 takes it unpadded
GRID = 5  # fc120 reads a 16x5x5 map


def _conv1_padding(image_size: int) -> int:
    """Padding that brings inputs below 32 px up to 32 or 33 (2 at 28 px, as the classic MNIST LeNet)."""
    return max(0, math.ceil((PAPER_SIZE - image_size) / 2))


def _feature_size(image_size: int, padding: int) -> int:
    """The side of the map after conv5 -> pool2 -> conv5 -> pool2."""
    return ((image_size + 2 * padding - 4) // 2 - 4) // 2


class LeNet5(nn.Module):
    """LeNet-5 with C3 fully connected; 61,706 parameters at 32x32x1 with 10 classes, as in the paper."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        activation: str = "tanh",
        pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        act, pool_layer = choice(ACTIVATIONS, activation, "activation"), choice(POOLS, pool, "pool")
        padding = _conv1_padding(image_size)
        size = _feature_size(image_size, padding)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=padding),
            act(),
            pool_layer(2),
            nn.Conv2d(6, 16, 5),
            act(),
            pool_layer(2),
        )
        self.pool = nn.Identity() if size == GRID else nn.AdaptiveAvgPool2d(GRID)  # inputs above 33 px
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * GRID * GRID, 120),
            act(),
            nn.Dropout(drop_rate),
            nn.Linear(120, 84),
            act(),
            nn.Dropout(drop_rate),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@MODELS.register("lenet5")
def lenet5(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> LeNet5:
    return LeNet5(num_classes, in_channels, image_size, **kwargs)


# The last spatial feature map (what Grad-CAM explains: imgcls_cli.models.cam_layer reads it).
lenet5.cam_layer = "features"
