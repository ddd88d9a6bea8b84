"""Building blocks shared by the model families: the activations that model.activation names, and choices."""
from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from imgcls_cli.errors import UserError

T = TypeVar("T")

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": lambda: nn.ELU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
}


def choice(table: dict[str, T], value: str, key: str) -> T:
    """table[value], or a user error naming model.<key> and its choices."""
    if value not in table:
        raise UserError(f"model.{key} must be one of {', '.join(table)}, not '{value}'.")
    return table[value]


def activation(name: str) -> nn.Module:
    """A new activation layer for model.activation=name."""
    return choice(ACTIVATIONS, name, "activation")()
