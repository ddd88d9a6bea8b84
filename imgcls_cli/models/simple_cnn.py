"""simple_cnn: three blocks of two 3x3 convs (+ batch norm) + ReLU + max-pool, then a dropout MLP head."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from imgcls_cli.models._api import MODELS


def _conv_block(in_ch: int, out_ch: int, batch_norm: bool, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (in_ch, out_ch):
        layers.append(nn.Conv2d(c_in, out_ch, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SimpleCNN(nn.Module):
    """A small VGG-style network that adapts to the input's channels and size."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        widths: Sequence[int] = (32, 64, 128),
        hidden: int = 256,
        drop_rate: float = 0.3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        blocks, size, ch = [], image_size, in_channels
        for width in widths:
            pool = size >= 2  # never pool a 1x1 map away
            blocks.append(_conv_block(ch, width, batch_norm, pool))
            size, ch = (size // 2 if pool else size), width
        self.features = nn.Sequential(*blocks)
        pooled = min(size, 4)  # bound the head's size for large inputs
        self.pool = nn.AdaptiveAvgPool2d(pooled)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(drop_rate),
            nn.Linear(ch * pooled * pooled, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


@MODELS.register("simple_cnn")
def simple_cnn(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> SimpleCNN:
    return SimpleCNN(num_classes, in_channels, image_size, **kwargs)


# The last spatial feature map (what Grad-CAM explains: imgcls_cli.models.cam_layer reads it).
simple_cnn.cam_layer = "features"
