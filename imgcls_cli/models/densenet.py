"""DenseNet-BC: dense blocks that concatenate every earlier feature map, 1x1 bottlenecks and compressing transitions."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.models._api import MODELS
from imgcls_cli.models.layers import activation as activation_layer

BOTTLENECK = 4  # the 1x1 conv of a dense layer makes BOTTLENECK * growth_rate channels ("4k" in the paper)


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class DenseLayer(nn.Module):
    """H_l = BN-act-conv1x1(4k) - BN-act-conv3x3(k) applied to the concatenation of all earlier maps."""

    def __init__(self, in_ch: int, growth_rate: int, activation: str, batch_norm: bool) -> None:
        super().__init__()
        width = BOTTLENECK * growth_rate
        self.norm1, self.act1 = _norm(in_ch, batch_norm), activation_layer(activation)
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=not batch_norm)
        self.norm2, self.act2 = _norm(width, batch_norm), activation_layer(activation)
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=not batch_norm)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)  # one concatenation per layer, as torchvision does
        x = self.conv1(self.act1(self.norm1(x)))
        return self.conv2(self.act2(self.norm2(x)))


class DenseBlock(nn.ModuleList):
    """Layer l sees [x_0, ..., x_{l-1}]; the block returns all of them concatenated."""

    def __init__(self, num_layers: int, in_ch: int, growth_rate: int, activation: str, batch_norm: bool) -> None:
        super().__init__(
            DenseLayer(in_ch + i * growth_rate, growth_rate, activation, batch_norm) for i in range(num_layers)
        )
        self.out_channels = in_ch + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self:
            features.append(layer(features))
        return torch.cat(features, 1)


def _transition(in_ch: int, out_ch: int, pool: bool, activation: str, batch_norm: bool) -> nn.Sequential:
    layers = [_norm(in_ch, batch_norm), activation_layer(activation), nn.Conv2d(in_ch, out_ch, 1, bias=not batch_norm)]
    if pool:
        layers.append(nn.AvgPool2d(2))
    return nn.Sequential(*layers)


class DenseNet(nn.Module):
    def __init__(
        self,
        block_config: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        growth_rate: int = 32,
        compression: float = 0.5,
        stem: str = "auto",
        drop_rate: float = 0.0,
        activation: str = "relu",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < compression <= 1:
            raise UserError(f"model.compression must be in (0, 1], not {compression}.")
        channels, size = 2 * growth_rate, image_size
        if stem == "auto":
            stem = "small" if image_size < 112 else "imagenet"
        if stem == "small":  # a 3x3 conv at full resolution; the first dense layer's BN-act follows
            self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=not batch_norm))
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=not batch_norm),
                _norm(channels, batch_norm),
                activation_layer(activation),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
            size = _out_size(_out_size(size, 7, 2, 3), 3, 2, 1)
        else:
            raise UserError(f"model.stem must be auto, small or imagenet, not '{stem}'.")
        stages: list[nn.Module] = []
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, channels, growth_rate, activation, batch_norm)
            stages.append(block)
            channels = block.out_channels
            if i < len(block_config) - 1:
                pool = size >= 2  # never average a 1x1 map away
                out_ch = int(math.floor(compression * channels))
                stages.append(_transition(channels, out_ch, pool, activation, batch_norm))
                channels, size = out_ch, (size // 2 if pool else size)
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(_norm(channels, batch_norm), activation_layer(activation), nn.AdaptiveAvgPool2d(1))
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.features(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))


def _densenet(block_config: Sequence[int], growth_rate: int, num_classes: int, in_channels: int, image_size: int,
              **kwargs) -> DenseNet:
    return DenseNet(block_config, num_classes, in_channels, image_size, growth_rate=growth_rate, **kwargs)


@MODELS.register("densenet121")
def densenet121(*, num_classes: int, in_channels: int = 3, image_size: int = 32, growth_rate: int = 32,
                **kwargs) -> DenseNet:
    return _densenet((6, 12, 24, 16), growth_rate, num_classes, in_channels, image_size, **kwargs)


@MODELS.register("densenet_bc_100")
def densenet_bc_100(*, num_classes: int, in_channels: int = 3, image_size: int = 32, growth_rate: int = 12,
                    **kwargs) -> DenseNet:
    return _densenet((16, 16, 16), growth_rate, num_classes, in_channels, image_size, **kwargs)


# The last spatial feature map (what Grad-CAM explains: imgcls_cli.models.cam_layer reads it).
for _builder in (densenet121, densenet_bc_100):
    _builder.cam_layer = "features"
