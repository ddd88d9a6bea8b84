"""int8 ONNX models: ONNX Runtime's static quantization (QDQ, per-channel int8 weights, uint8 activations) calibrated
on training images, or its dynamic quantization where a model has no convolution to calibrate."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgcls_cli.errors import UserError
from imgcls_cli.export.onnx import INPUT, has_convolutions
from imgcls_cli.export.trace import quiet

if TYPE_CHECKING:
    import onnx

CALIBRATION_BATCH = 32  # images per calibration run: the activation ranges are the same for any batching
STATIC, DYNAMIC = "int8_static", "int8_dynamic"  # metadata's quantize values


def _reader(images: np.ndarray) -> Any:
    """ONNX Runtime's CalibrationDataReader over normalized float32 images (N, C, H, W), a batch at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(images):
                return None
            batch = images[self.start:self.start + CALIBRATION_BATCH]
            self.start += CALIBRATION_BATCH
            return {INPUT: np.ascontiguousarray(batch, dtype=np.float32)}

        def rewind(self) -> None:
            self.start = 0

    return Batches()


def quantize(model: onnx.ModelProto, calibration: np.ndarray, scratch: Path, name: str) -> tuple[onnx.ModelProto, str]:
    """The int8 model and how it was made (STATIC or DYNAMIC). scratch: a folder for ONNX Runtime's files (they are
    paths in and out), removed after."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    static = has_convolutions(model)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".quantize-") as work:
        source, prepared, out = Path(work) / "fp32.onnx", Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        try:
            onnx.save(model, str(source))
            _prepare(source, prepared)
            with quiet():
                if static:
                    quantize_static(str(prepared), str(out), _reader(calibration), quant_format=QuantFormat.QDQ,
                                    per_channel=True, activation_type=QuantType.QUInt8,
                                    weight_type=QuantType.QInt8)
                else:
                    quantize_dynamic(str(prepared), str(out), per_channel=True, weight_type=QuantType.QInt8)
            return onnx.load(str(out)), STATIC if static else DYNAMIC
        except OSError as exc:
            raise UserError(f"cannot quantize '{name}' in {scratch}: {exc.strerror or exc}; nothing was written.") \
                from None
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's refusal of this graph, in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"ONNX Runtime could not quantize model '{name}' to int8: {first[:300]}") from None


def _prepare(source: Path, prepared: Path) -> None:
    """ONNX Runtime's pre-processing (shape inference, graph optimization) that quantization works best after;
    a graph it cannot process is quantized as exported."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with quiet():
            quant_pre_process(str(source), str(prepared))
    except OSError:
        raise
    except Exception:  # noqa: BLE001 - the symbolic shape inference does not know every op: quantize as it is
        prepared.write_bytes(source.read_bytes())
