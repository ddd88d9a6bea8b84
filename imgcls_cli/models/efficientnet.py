"""EfficientNet: MBConv blocks with squeeze-excitation and stochastic depth, scaled in depth, width and resolution."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from imgcls_cli.errors import UserError
from imgcls_cli.models._api import MODELS
from imgcls_cli.models.layers import activation as activation_layer

# Compound scaling (Tan & Le, 2019): depth alpha^phi, width beta^phi, resolution gamma^phi,
# chosen so that alpha * beta^2 * gamma^2 ~ 2, i.e. each step of phi roughly doubles the FLOPs.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15

# EfficientNet-B0, per stage: expand ratio, kernel, stride, output channels, layers (torchvision's table).
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_EXPANSION = 4  # head 1x1 conv: 4 x the last stage's channels (1280 for B0)


class Preset(NamedTuple):
    width_mult: float
    depth_mult: float
    resolution: int
    drop_rate: float


# torchvision's hand-tuned B0-B3 (they are not exactly the phi formula: B1 keeps width 1.0, depth 1.1).
PRESETS: dict[str, Preset] = {
    "efficientnet_b0": Preset(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": Preset(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": Preset(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": Preset(1.2, 1.4, 300, 0.3),
}


def compound_scaling(phi: float) -> tuple[float, float, float]:
    """The (depth, width, resolution) multipliers alpha^phi, beta^phi, gamma^phi."""
    return ALPHA**phi, BETA**phi, GAMMA**phi


def scaled_resolution(phi: float, base_image_size: int = 224) -> int:
    """The training resolution for phi: round(base_image_size * gamma^phi)."""
    return round(base_image_size * GAMMA**phi)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of divisor, never going more than 10% below value (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def round_channels(channels: int, width_mult: float) -> int:
    return _make_divisible(channels * width_mult)


def round_layers(layers: int, depth_mult: float) -> int:
    # round() first: float noise (5 * 1.2 = 6.000000000000001) must not add a layer
    return int(math.ceil(round(layers * depth_mult, 9)))


def _conv_bn_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 activation: str | None = "silu", batch_norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    if activation is not None:
        layers.append(activation_layer(activation))
    return nn.Sequential(*layers)


class StochasticDepth(nn.Module):
    """Drops the whole residual branch of a random subset of the samples while training (rescaling the rest)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep)
        return x * mask / keep if keep > 0 else x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SqueezeExcitation(nn.Module):
    """Channel gates from a global average: 1x1 reduce - act - 1x1 expand - sigmoid."""

    def __init__(self, channels: int, squeeze: int, activation: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.act = activation_layer(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(scale))))


class MBConv(nn.Module):
    """Inverted residual: expand 1x1 - depthwise kxk - squeeze-excitation - project 1x1 (+ input when shapes match)."""

    def __init__(self, in_ch: int, out_ch: int, expand_ratio: int, kernel: int, stride: int, drop_path: float,
                 activation: str, batch_norm: bool) -> None:
        super().__init__()
        hidden = _make_divisible(in_ch * expand_ratio)
        layers: list[nn.Module] = []
        if hidden != in_ch:
            layers.append(_conv_bn_act(in_ch, hidden, 1, activation=activation, batch_norm=batch_norm))
        layers += [
            _conv_bn_act(hidden, hidden, kernel, stride, groups=hidden, activation=activation, batch_norm=batch_norm),
            SqueezeExcitation(hidden, max(1, in_ch // 4), activation),  # squeeze to a quarter of the block input
            _conv_bn_act(hidden, out_ch, 1, activation=None, batch_norm=batch_norm),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_path = StochasticDepth(drop_path) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self.block(x))
        return out + x if self.residual else out


class EfficientNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.2,
        activation: str = "silu",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if width_mult <= 0 or depth_mult <= 0:
            raise UserError(f"model.width_mult and model.depth_mult must be > 0, not {width_mult} and {depth_mult}.")
        channels = round_channels(STEM_CHANNELS, width_mult)
        # stride-2 3x3 convs with padding 1 map any size >= 1 to size >= 1: 28 px ends at 1x1, never empty
        self.stem = _conv_bn_act(in_channels, channels, 3, 2, activation=activation, batch_norm=batch_norm)
        total = sum(round_layers(layers, depth_mult) for *_, layers in B0_STAGES)
        stages, index = [], 0
        for expand, kernel, stride, out_ch, layers in B0_STAGES:
            out_ch, blocks = round_channels(out_ch, width_mult), []
            for j in range(round_layers(layers, depth_mult)):
                drop_path = drop_path_rate * index / total  # linear in depth, 0 for the first block
                blocks.append(MBConv(channels, out_ch, expand, kernel, stride if j == 0 else 1, drop_path,
                                     activation, batch_norm))
                channels, index = out_ch, index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        head = HEAD_EXPANSION * channels
        self.head = _conv_bn_act(channels, head, 1, activation=activation, batch_norm=batch_norm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(head, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.stages(self.stem(x)))).flatten(1)
        return self.fc(self.dropout(x))


def _efficientnet(width_mult: float, depth_mult: float, num_classes: int, in_channels: int, **kwargs) -> EfficientNet:
    return EfficientNet(num_classes, in_channels, width_mult, depth_mult, **kwargs)


# Builders take image_size like every other one; the network is fully convolutional and needs no size.
def _preset(name: str, num_classes: int, in_channels: int, **kwargs) -> EfficientNet:
    preset = PRESETS[name]
    kwargs.setdefault("drop_rate", preset.drop_rate)
    return _efficientnet(preset.width_mult, preset.depth_mult, num_classes, in_channels, **kwargs)


@MODELS.register("efficientnet")
def efficientnet(*, num_classes: int, in_channels: int = 3, image_size: int = 32, phi: float = 0,
                 base_image_size: int = 224, width_mult: float | None = None, depth_mult: float | None = None,
                 **kwargs) -> EfficientNet:
    """Compound-scaled EfficientNet; width_mult/depth_mult override beta^phi/alpha^phi when given."""
    depth, width, _ = compound_scaling(phi)
    return _efficientnet(width if width_mult is None else width_mult, depth if depth_mult is None else depth_mult,
                         num_classes, in_channels, **kwargs)


@MODELS.register("efficientnet_b0")
def efficientnet_b0(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> EfficientNet:
    return _preset("efficientnet_b0", num_classes, in_channels, **kwargs)


@MODELS.register("efficientnet_b1")
def efficientnet_b1(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> EfficientNet:
    return _preset("efficientnet_b1", num_classes, in_channels, **kwargs)


@MODELS.register("efficientnet_b2")
def efficientnet_b2(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> EfficientNet:
    return _preset("efficientnet_b2", num_classes, in_channels, **kwargs)


@MODELS.register("efficientnet_b3")
def efficientnet_b3(*, num_classes: int, in_channels: int = 3, image_size: int = 32, **kwargs) -> EfficientNet:
    return _preset("efficientnet_b3", num_classes, in_channels, **kwargs)


# The resolution each model asks to be trained at (imgcls_cli.models.input_size reads these).
efficientnet.input_size = lambda phi=0, base_image_size=224, **_: scaled_resolution(phi, base_image_size)
efficientnet_b0.input_size = lambda **_: PRESETS["efficientnet_b0"].resolution
efficientnet_b1.input_size = lambda **_: PRESETS["efficientnet_b1"].resolution
efficientnet_b2.input_size = lambda **_: PRESETS["efficientnet_b2"].resolution
efficientnet_b3.input_size = lambda **_: PRESETS["efficientnet_b3"].resolution


# The last spatial feature map: the 1x1 head conv before the pool (what Grad-CAM explains: models.cam_layer reads it).
for _builder in (efficientnet, efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3):
    _builder.cam_layer = "head"
