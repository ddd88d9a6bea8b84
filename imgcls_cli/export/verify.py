"""Every export is checked before it is reported: the exported file and the checkpoint's PyTorch model run the same
images; an fp32 file must give the same answers (FP32_TOP1_AGREEMENT, FP32_MAX_PROB_DIFF), an int8 file reports its
accuracy beside the checkpoint's. A file is written under a temporary name and takes its final name only once it
passed (publish)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from imgcls_cli.errors import UserError
from imgcls_cli.export.onnx import INPUT
from imgcls_cli.export.trace import quiet

FP32_TOP1_AGREEMENT = 0.999  # fraction of the images whose top-1 class is the checkpoint's
FP32_MAX_PROB_DIFF = 1e-4  # the largest |probability difference| over every image and class
INT8_WARN_DROP = 0.005  # an int8 file that loses more accuracy than this (half a point) is reported with a warning
BATCH = 64


@dataclass(frozen=True)
class Agreement:
    """How an exported file's answers compare with the checkpoint's on the same images."""

    n_images: int
    top1_agreement: float
    max_abs_prob_diff: float
    accuracy: float  # the exported file's top-1 accuracy on these images
    checkpoint_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def compare(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> Agreement:
    """The exported model's logits against the checkpoint's (reference), both (N, classes), on images with labels.
    Multi-hot labels (task=multilabel): sigmoid probabilities; an image agrees when its set of labels at 0.5 is the
    checkpoint's, and is right when that set is its labels."""
    if labels.ndim == 2:
        p_ref, p = sigmoid(reference), sigmoid(logits)
        sets_ref, sets, truth = p_ref >= 0.5, p >= 0.5, labels > 0.5
        return Agreement(len(labels), float((sets == sets_ref).all(1).mean()), float(np.abs(p - p_ref).max()),
                         float((sets == truth).all(1).mean()), float((sets_ref == truth).all(1).mean()))
    p_ref, p = softmax(reference), softmax(logits)
    top_ref, top = p_ref.argmax(1), p.argmax(1)
    return Agreement(len(labels), float((top == top_ref).mean()), float(np.abs(p - p_ref).max()),
                     float((top == labels).mean()), float((top_ref == labels).mean()))


def check_fp32(agreement: Agreement, name: str) -> Agreement:
    """The agreement, or one line saying that the fp32 file does not give the checkpoint's answers."""
    if agreement.top1_agreement < FP32_TOP1_AGREEMENT or not agreement.max_abs_prob_diff <= FP32_MAX_PROB_DIFF:
        raise UserError(f"{name} does not match the checkpoint on {agreement.n_images} test images: top-1 agreement "
                        f"{agreement.top1_agreement:.4f} (needs >= {FP32_TOP1_AGREEMENT}), max |prob difference| "
                        f"{agreement.max_abs_prob_diff:.2e} (needs <= {FP32_MAX_PROB_DIFF:g}); the file was not kept.")
    return agreement


def publish(final: Path, write: Callable[[Path], Any], check: Callable[[Path], Agreement]) -> Agreement:
    """write(temporary path), check(temporary path), then the file takes its final name (os.replace): a failed
    write or check (an exception) leaves nothing under either name."""
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        agreement = check(temporary)
        os.replace(temporary, final)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UserError(f"cannot write {final}: {exc.strerror or exc}; nothing was written.") from None
    except UserError as exc:  # a failed write or check: named by the file's final name
        temporary.unlink(missing_ok=True)
        raise UserError(str(exc).replace(str(temporary), str(final))) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return agreement


def torch_logits(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """A PyTorch model's fp32 logits for normalized images, BATCH at a time."""
    with torch.inference_mode():
        return torch.cat([model(images[i:i + BATCH]).float() for i in range(0, len(images), BATCH)]).numpy()


def onnx_logits(path: Path, images: np.ndarray, name: str) -> np.ndarray:
    """ONNX Runtime's (CPUExecutionProvider) logits of an ONNX file for normalized images, BATCH at a time."""
    import onnxruntime as ort

    try:
        with quiet():
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs = [session.run(None, {INPUT: images[i:i + BATCH]})[0] for i in range(0, len(images), BATCH)]
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's refusal of the file (an opset it does not run...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ONNX Runtime {ort.__version__} cannot run {name}: {first[:300]}") from None
    return np.concatenate(runs)


def pt2_logits(path: Path, images: torch.Tensor) -> np.ndarray:
    """The logits of a .pt2 file's program (torch.export.load) for normalized images."""
    from imgcls_cli.export import pt2

    return torch_logits(pt2.load(path), images)
