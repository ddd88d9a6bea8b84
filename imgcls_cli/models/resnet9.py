"""resnet9: the compact network of the CIFAR-10 speed runs (Page's DAWNBench ResNet-9, ancestor of airbench).

prep conv -> [conv, max-pool, residual block] -> [conv, max-pool] -> [conv, max-pool, residual block] ->
global max-pool -> linear, scaled by `head_scale`. Every conv is 3x3 + batch norm + ReLU; the residual blocks are
two such convs added to their input. Few, wide layers and early pooling make it fast per image; the scaled-down
logits (x 0.125) let it train at high learning rates with label smoothing.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.models._api import MODELS


def _conv_bn(in_ch: int, out_ch: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, widths: Sequence[int], head_scale: float) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.features = nn.Sequential(
            _conv_bn(in_channels, w0),
            _conv_bn(w0, w1, pool=True), Residual(w1),
            _conv_bn(w1, w2, pool=True),
            _conv_bn(w2, w3, pool=True), Residual(w3),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(w3, num_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)) * self.head_scale


@MODELS.register("resnet9")
def resnet9(*, num_classes: int, in_channels: int = 3, image_size: int = 32,
            widths: Sequence[int] = (64, 128, 256, 512), head_scale: float = 0.125) -> ResNet9:
    widths = list(widths)
    if len(widths) != 4 or any(not isinstance(w, int) or w < 1 for w in widths):
        raise UserError(f"model.widths must be 4 positive whole numbers for resnet9, not {widths}.")
    if image_size < 8:
        raise UserError(f"resnet9 pools three times: dataset.image_size must be at least 8, not {image_size}.")
    return ResNet9(num_classes, in_channels, widths, float(head_scale))


# The last spatial feature map, before the global max-pool (what Grad-CAM explains: models.cam_layer reads it).
resnet9.cam_layer = "features.5"
