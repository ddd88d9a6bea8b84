"""VGG (Simonyan & Zisserman, 2014), configs A/B/D/E: blocks of 3x3 convs (+ batch norm) + ReLU + max-pool."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from imgcls_cli.errors import as_int
from imgcls_cli.models._api import MODELS

CONFIGS: dict[str, list[list[int]]] = {  # conv widths of the five blocks
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "D": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "E": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}
LARGE_FROM = 64  # hidden=null: 4096-wide head (torchvision) from 64 px, 512-wide (CIFAR VGGs) below
MAX_GRID = 7  # torchvision's 7x7 adaptive pool; smaller maps are read as they are (1x1 below 64 px)


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1)  # with a bias even before batch norm, as torchvision


def _block(in_ch: int, widths: Sequence[int], batch_norm: bool, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers.append(conv3x3(in_ch, width))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=True))
        in_ch = width
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(
        self,
        config: list[list[int]],
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        batch_norm: bool = True,
        drop_rate: float = 0.5,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        hidden = (4096 if image_size >= LARGE_FROM else 512) if hidden is None else as_int(hidden, "model.hidden", 1)
        blocks, size, ch = [], image_size, in_channels
        for widths in config:
            pool = size >= 2  # never pool a 1x1 map away
            blocks.append(_block(ch, widths, batch_norm, pool))
            size, ch = (size // 2 if pool else size), widths[-1]
        self.features = nn.Sequential(*blocks)
        grid = min(MAX_GRID, size)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * grid * grid, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's: Kaiming-normal convs (fan_out), unit batch norms, N(0, 0.01) linears, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _vgg(config: str, **kwargs) -> VGG:
    return VGG(CONFIGS[config], **kwargs)


@MODELS.register("vgg11")
def vgg11(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> VGG:
    return _vgg("A", num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


@MODELS.register("vgg13")
def vgg13(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> VGG:
    return _vgg("B", num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


@MODELS.register("vgg16")
def vgg16(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> VGG:
    return _vgg("D", num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


@MODELS.register("vgg19")
def vgg19(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> VGG:
    return _vgg("E", num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


# The last spatial feature map (what Grad-CAM explains: imgcls_cli.models.cam_layer reads it).
for _builder in (vgg11, vgg13, vgg16, vgg19):
    _builder.cam_layer = "features"
