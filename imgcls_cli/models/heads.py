"""Encoder and classifier head of any registered model: f(x) = Classifier(Encoder(x)).

The classifier head is the model's last Linear layer (SqueezeNet's: a 1x1 convolution) with one output per class;
everything before it is the encoder, and the head's input is the embedding that `eval features=true` writes, that
finetune.freeze keeps fixed and that the domain classifier of domain-adversarial training looks at.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def head_name(model: nn.Module, num_classes: int) -> str:
    """The qualified name of the classifier head: the last Linear/1x1-conv layer with num_classes outputs."""
    name = None
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            name = path
        elif isinstance(module, nn.Conv2d) and module.out_channels == num_classes and module.kernel_size == (1, 1):
            name = path
    if name is None:
        raise ValueError(f"{type(model).__name__} has no Linear layer with {num_classes} outputs")
    return name


def is_head(tensor_name: str, head: str) -> bool:
    """Whether a parameter or state-dict name belongs to the head module `head`."""
    return tensor_name.startswith(head + ".")


def encoder_parameters(model: nn.Module, head: str) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if not is_head(n, head)]


def embedding(inputs: torch.Tensor) -> torch.Tensor:
    """The head's input as one vector per image (a 1x1-conv head's feature map is averaged over space)."""
    return inputs.mean((2, 3)) if inputs.ndim == 4 else inputs.flatten(1)


@contextlib.contextmanager
def captured_embeddings(model: nn.Module, head: str) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward pass appends its embeddings (the head's input, still in the autograd
    graph) to the yielded list."""
    found: list[torch.Tensor] = []
    handle = model.get_submodule(head).register_forward_hook(lambda _m, args, _out: found.append(embedding(args[0])))
    try:
        yield found
    finally:
        handle.remove()
