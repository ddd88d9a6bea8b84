"""Training images/s of a model on this CPU in fp32, channels_last and bf16 autocast, at 32x32, batch 64.

    python benchmarks/cpu_formats.py [--model simple_cnn] [--channels 1] [--steps 30]

The numbers behind precision=auto and channels_last=auto on CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from imgcls_cli.engine.device import cpu_has_fast_bf16
from imgcls_cli.models import create_model


def images_per_second(model_name: str, channels: int, channels_last: bool, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=channels, image_size=32)
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(64, channels, 32, 32), torch.randint(0, 10, (64,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> None:
        with amp():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 64 * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simple_cnn")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"{args.model}, {args.channels}x32x32, batch 64, {torch.get_num_threads()} threads, "
          f"AMX/AVX512-BF16: {cpu_has_fast_bf16()}\n")
    print("| format | train images/s |\n| --- | --- |")
    for name, cl, bf16 in [("fp32 NCHW", False, False), ("fp32 channels_last", True, False),
                           ("bf16 NCHW", False, True), ("bf16 channels_last", True, True)]:
        print(f"| {name} | {images_per_second(args.model, args.channels, cl, bf16, args.steps):.0f} |")


if __name__ == "__main__":
    main()
