"""Device and numeric precision: what `device=auto` and `precision=auto` resolve to, and why."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from imgcls_cli.errors import UserError
from imgcls_cli.specs.device import check_channels_last, check_precision


def resolve_device(name: str) -> torch.device:
    """auto picks cuda, then mps, then cpu; an explicit device that is not there is a user error."""
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device must be auto, cpu, cuda, cuda:N or mps, not '{name}'.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device={name} but CUDA is not available here; use device=auto or device=cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device=mps but MPS is not available here; use device=auto or device=cpu.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device must be auto, cpu, cuda, cuda:N or mps, not '{name}'.")
    return device


def cpu_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


def auto_precision_for_model(precision: str, setting: str, device: torch.device, model: torch.nn.Module,
                             flags: set[str] | None = None) -> str:
    """precision=auto, refined by the model: on a CPU with AVX512-BF16 but no AMX, depthwise convolutions
    (EfficientNet's MBConv, MobileNet) train slower under bf16 autocast than in fp32 (README, models table:
    efficientnet_b0 420 vs 890 images/s), so such a model trains in fp32 there."""
    if setting != "auto" or precision != "bf16" or device.type != "cpu":
        return precision
    if "amx_bf16" in (cpu_flags() if flags is None else flags):
        return precision
    depthwise = any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
                    for m in model.modules())
    return "fp32" if depthwise else precision


def cpu_has_fast_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU has AMX or AVX512-BF16, where bf16 matmuls and convs beat fp32 (flags: /proc/cpuinfo's)."""
    return bool({"amx_bf16", "avx512_bf16"} & (cpu_flags() if flags is None else flags))


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on CUDA that supports it (else fp16 with a GradScaler), bf16 on CPUs built for it, else fp32."""
    if check_precision(name) != "auto":
        if name == "fp16" and device.type == "cpu":
            raise UserError("precision=fp16 is for GPUs; on CPU use precision=bf16 or fp32.")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(setting: str | bool, device: torch.device) -> bool:
    """auto: on CUDA (tensor cores) and on CPU (oneDNN's NHWC kernels: measured 5-20% faster, see README)."""
    if check_channels_last(setting) == "auto":
        return device.type in ("cuda", "cpu")
    return bool(setting)
