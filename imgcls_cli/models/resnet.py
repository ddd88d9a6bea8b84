"""ResNet: residual blocks with batch norm and 1x1 projection shortcuts (basic and bottleneck)."""
from __future__ import annotations

from typing import Type

import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.models._api import MODELS


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_ch, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_ch, width, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), stride on the 3x3 as torchvision does."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1, self.bn1 = conv1x1(in_ch, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, out_ch), nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_ch, out_ch, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(
        self,
        block: Type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        width: int = 64,
        stem: str = "auto",
        zero_init_residual: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if stem == "auto":
            stem = "small" if image_size < 112 else "imagenet"
        if stem == "small":  # 3x3 stride 1, no max-pool: small images keep their resolution
            self.stem = nn.Sequential(conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            raise UserError(f"model.stem must be auto, small or imagenet, not '{stem}'.")
        stages, in_ch = [], width
        for i, blocks in enumerate(layers):
            stage_width = width * 2**i
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(blocks):
                stage.append(block(in_ch, stage_width, stride if j == 0 else 1))
                in_ch = stage_width * block.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each block starts as the identity
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))


DEPTHS: dict[int, tuple[type, list[int]]] = {
    10: (BasicBlock, [1, 1, 1, 1]),
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def _resnet(depth: int, **kwargs) -> ResNet:
    if depth not in DEPTHS:
        raise UserError(f"model.depth must be one of {', '.join(map(str, DEPTHS))}, not {depth}.")
    block, layers = DEPTHS[depth]
    return ResNet(block, layers, **kwargs)


@MODELS.register("resnet")
def resnet(*, depth: int = 18, **kwargs) -> ResNet:
    return _resnet(depth, **kwargs)


@MODELS.register("resnet18")
def resnet18(**kwargs) -> ResNet:
    return _resnet(18, **kwargs)


@MODELS.register("resnet34")
def resnet34(**kwargs) -> ResNet:
    return _resnet(34, **kwargs)


@MODELS.register("resnet50")
def resnet50(**kwargs) -> ResNet:
    return _resnet(50, **kwargs)


@MODELS.register("resnet101")
def resnet101(**kwargs) -> ResNet:
    return _resnet(101, **kwargs)


# The last spatial feature map (what Grad-CAM explains: imgcls_cli.models.cam_layer reads it).
for _builder in (resnet, resnet18, resnet34, resnet50, resnet101):
    _builder.cam_layer = "stages"
