"""Train and inference images/s of every model on this CPU: fp32 NCHW, fp32 channels_last, bf16 autocast NCHW and
bf16 autocast channels_last (what `precision=auto channels_last=auto` trains with on a CPU with AVX512-BF16/AMX).

    python benchmarks/models.py [--models simple_cnn resnet18] [--steps 3]
                                [--formats fp32,channels_last,bf16,bf16_channels_last] [--budget 540]

Every model option (`imgcls list models`, except tv) at 3x32x32, 10 classes, batch 128, Adam: also the presets
that ask for a larger input (the efficientnet ones), which are measured at 32 px all the same (see the note
column). One warm-up step, then --steps timed steps for each cell. Prints a markdown table and the machine.

How long it takes: on 2 cores of an AMD EPYC without AMX/AVX512-BF16 (a shared machine), one fp32 train step
of resnet18 (555M MACs an image, batch 128) took 24 s and its bf16 step 347 s: bf16 autocast is 15-25x slower
than fp32 on such a CPU, and measuring every model there takes hours. So the default run measures the models
cheapest first (by MACs) and starts no model that it predicts (from the last one's time and MACs) would end
past --budget seconds (default 540, none with --models): it ends in about 9-10 minutes and lists the models
it left out. Without AMX/AVX512-BF16 the bf16 formats are left out by default; --formats names them to
measure them anyway, with one timed step. `--models simple_cnn lenet5 --steps 2` took 33 s there, imports included.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from machine import cpu_name
from imgcls_cli.engine.device import cpu_has_fast_bf16
from imgcls_cli.listing import ModelPreset, format_macs, model_cost, model_presets
from imgcls_cli.models import create_model, input_size

FORMATS = ("fp32", "channels_last", "bf16", "bf16_channels_last")  # the last: what precision=auto trains with
BATCH, IMAGE_SIZE, NUM_CLASSES, DEFAULT_BUDGET = 128, 32, 10, 540


def machine() -> str:
    return (f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"AMX/AVX512-BF16: {'yes' if cpu_has_fast_bf16() else 'no'}")


def images_per_second(model: nn.Module, fmt: str, train: bool, steps: int) -> float:
    """Images/s of train steps (forward, backward, Adam) or of inference batches, after one warm-up step."""
    model = copy.deepcopy(model)
    x, y = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE), torch.randint(0, NUM_CLASSES, (BATCH,))
    if fmt.endswith("channels_last"):
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if fmt.startswith("bf16") else contextlib.nullcontext()
    opt = torch.optim.Adam(model.parameters())
    model.train(train)

    def step() -> None:
        if not train:
            with torch.inference_mode(), amp:
                model(x)
            return
        with amp:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return BATCH * steps / (time.perf_counter() - start)


def measure(preset: ModelPreset, formats: list[str], steps: dict[str, int]) -> dict[str, float]:
    """{"train fp32": images/s, "inference fp32": ..., ...} of one model."""
    torch.manual_seed(0)
    model = create_model(preset.name, **{**preset.kwargs, "num_classes": NUM_CLASSES, "in_channels": 3,
                                         "image_size": IMAGE_SIZE})
    return {f"{kind} {fmt}": images_per_second(model, fmt, kind == "train", steps[fmt])
            for kind in ("train", "inference") for fmt in formats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="config options or model names (default: all but tv)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell (bf16 on a slow CPU: 1)")
    parser.add_argument("--formats", help=f"comma-separated subset of {','.join(FORMATS)} "
                                          "(default: all; without AMX/AVX512-BF16: fp32,channels_last)")
    parser.add_argument("--budget", type=float, help=f"seconds: start no model predicted to end later "
                                                     f"(default {DEFAULT_BUDGET}; 0 or --models: no limit)")
    args = parser.parse_args()
    start = time.perf_counter()
    fast_bf16 = cpu_has_fast_bf16()
    formats = (args.formats.split(",") if args.formats
               else [f for f in FORMATS if not f.startswith("bf16") or fast_bf16])
    if unknown := set(formats) - set(FORMATS):
        parser.error(f"unknown format(s) {', '.join(sorted(unknown))}; choose from {', '.join(FORMATS)}")
    steps = {fmt: args.steps if not fmt.startswith("bf16") or fast_bf16 else 1 for fmt in formats}
    budget = args.budget if args.budget is not None else (0 if args.models else DEFAULT_BUDGET)

    presets = [p for p in model_presets() if p.name != "tv"]
    if args.models:
        presets = [p for p in presets if p.label in args.models or p.name in args.models]
        if missing := set(args.models) - {p.label for p in presets} - {p.name for p in presets}:
            parser.error(f"unknown model(s) {', '.join(sorted(missing))}; see `imgcls list models`")
    costs = {}
    for preset in presets:
        with contextlib.suppress(Exception):  # a model that cannot be built shows its error in its row
            costs[preset.label] = model_cost(preset, image_size=IMAGE_SIZE)
    presets.sort(key=lambda p: costs[p.label].macs if p.label in costs else 0.0)

    print(f"{machine()}\n3x{IMAGE_SIZE}x{IMAGE_SIZE}, {NUM_CLASSES} classes, batch {BATCH}, images/s after one "
          f"warm-up step; timed steps: {', '.join(f'{f} {n}' for f, n in steps.items())}\n")
    columns = [f"{kind} {fmt}" for kind in ("train", "inference") for fmt in FORMATS]
    print("| model= | params (M) | MACs | " + " | ".join(columns) + " | note |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in columns) + " | --- |")
    last = None  # (seconds, MACs) of the last model measured
    for preset in presets:
        cost = costs.get(preset.label)
        asked = input_size(preset.name, preset.kwargs) if cost else None
        notes = [f"its preset asks for {asked} px"] if asked and asked != IMAGE_SIZE else []
        elapsed, results = time.perf_counter() - start, {}
        predicted = last[0] * cost.macs / max(last[1], 1.0) if cost and last else 0.0
        if budget and last and elapsed + predicted > budget:
            notes.append(f"not measured: ~{predicted:.0f} s more would pass --budget {budget:.0f}")
        else:
            began = time.perf_counter()
            try:
                results = measure(preset, formats, steps)
                if cost:
                    last = (time.perf_counter() - began, cost.macs)
            except Exception as exc:  # noqa: BLE001 - one broken model must not end the table
                notes.append(f"fails: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")
        params = f"{cost.params / 1e6:.2f}" if cost else ""
        macs = format_macs(cost.macs) if cost else ""
        cells = [f"{results[c]:.0f}" if c in results else "-" for c in columns]
        print(f"| {preset.label} | {params} | {macs} | " + " | ".join(cells) + f" | {'; '.join(notes)} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
