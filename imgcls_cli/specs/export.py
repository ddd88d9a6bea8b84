"""ExportSpec: `imgcls export`'s keys checked once (checkpoint, format, quantize, calibration_samples, opset,
device)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from imgcls_cli.errors import UserError, as_int, shown

FORMATS = ("onnx", "torch_export")  # format=all: every one of them, in this order
QUANTIZE = ("none", "int8")
MIN_OPSET = 18  # the oldest opset torch.onnx's dynamo exporter writes
MAX_CALIBRATION_SAMPLES = 100_000
DEVICES = ("cpu", "auto")  # auto: the CPU too


@dataclass(frozen=True)
class ExportSpec:
    """Which checkpoint becomes which files: formats in FORMATS order; quantize=int8 adds an int8 ONNX file
    calibrated on `calibration_samples` training images."""

    checkpoint: str
    formats: tuple[str, ...] = ("onnx",)
    quantize: str = "none"
    calibration_samples: int = 512
    opset: int = MIN_OPSET
    device: str = "cpu"

    @classmethod
    def parse(cls, cfg: Mapping[str, Any]) -> ExportSpec:
        """The export config (plain dicts): format, quantize, calibration_samples, opset, device, in that order."""
        fmt = cfg.get("format", "onnx")
        if fmt == "all":
            formats = FORMATS
        elif fmt in FORMATS:
            formats = (fmt,)
        else:
            raise UserError(f"format must be one of {', '.join(FORMATS)} or all, not {shown(fmt)}.")
        quantize = cfg.get("quantize", "none")
        if quantize is None or quantize is False:
            quantize = "none"
        if quantize not in QUANTIZE:
            raise UserError(f"quantize must be none or int8, not {shown(quantize)}.")
        if quantize == "int8" and "onnx" not in formats:
            raise UserError("quantize=int8 writes an int8 ONNX file: use it with format=onnx or format=all.")
        samples = as_int(cfg.get("calibration_samples", 512), "calibration_samples", minimum=1,
                         maximum=MAX_CALIBRATION_SAMPLES)
        opset = as_int(cfg.get("opset", MIN_OPSET), "opset", minimum=MIN_OPSET, maximum=99)
        device = str(cfg.get("device", "cpu"))
        if device not in DEVICES:
            raise UserError(f"device={shown(device)}: exports are traced and verified on the CPU (the files run on any "
                            "device ONNX Runtime or torch supports); set device=cpu.")
        return cls(str(cfg["checkpoint"]), formats, quantize, samples, opset, "cpu")
