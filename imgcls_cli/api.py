"""The Python API: `load_model(path).predict(images)`, `train(overrides)` and `evaluate(overrides)`.

    import imgcls_cli
    model = imgcls_cli.load_model("outputs/train/<run>/checkpoints/best.pt")
    model.predict(["a.png", array, pil_image])       # [{"label": ..., "probability": ..., "topk": [...]}, ...]
    summary = imgcls_cli.train(["model=resnet", "epochs=2"])   # summary.json's content, and "run_dir"

Predictions take the path of `imgcls predict` (the checkpoint's own input size, channels and normalization, the
same model set-up and batched forward), so they equal its predictions.csv. A user's mistake raises UserError
carrying the one line the CLI would print; nothing calls sys.exit.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

import numpy as np

from imgcls_cli.errors import UserError

__all__ = ["Model", "UserError", "evaluate", "load_model", "train"]


@dataclass
class Model:
    """A checkpoint (.pt, or an exported .onnx / .pt2) ready to predict: its classes and input travel with it."""

    path: Path
    classes: list[str]
    checkpoint: dict[str, Any]
    _model: Any
    _amp: Any
    _channels_last: bool
    device: Any

    def predict(self, images: Iterable[Any], topk: int = 5, batch_size: int = 64) -> list[dict[str, Any]]:
        """One entry per image (a file path, a numpy RGB or gray array, or a PIL image), in order:
        {"input", "label", "probability", "topk": [{"label", "probability"}, ...], "error"}. A file that cannot be
        decoded gets its `error` (label and probability None), as in predictions.csv."""
        import torch

        from imgcls_cli.data.inputs import InputSpec
        from imgcls_cli.engine.predictor import predict
        from imgcls_cli.engine.predict import checkpoint_rows
        from imgcls_cli.specs.eval import check_topk
        from imgcls_cli.tasks import task_of

        topk = check_topk(topk)
        spec = InputSpec.from_checkpoint(self.checkpoint)
        items = list(images)
        decoded, names, errors = _decode_all(items, spec.channels, spec.size)
        good = [d for d in decoded if d is not None]
        memory = torch.channels_last if self._channels_last else torch.contiguous_format
        batches = ((spec.normalize(torch.from_numpy(np.stack(good[i:i + batch_size])).to(self.device))
                    .contiguous(memory_format=memory), None) for i in range(0, len(good), batch_size))
        multilabel = self.checkpoint.get("task") == "multilabel"
        probs = predict(self._model, batches, self._amp, activation=task_of(self.checkpoint.get("task")).activation
                        ).outputs.numpy() if good else np.zeros((0, len(self.classes)), np.float32)
        rows, _ = checkpoint_rows(self.checkpoint, probs, self.classes, names, "input", topk, errors)
        return [_entry(row, topk, multilabel) for row in rows]


def load_model(path: str | Path, device: str = "auto", precision: str = "auto") -> Model:
    """The checkpoint at path, set up as `imgcls predict checkpoint=PATH` sets it up."""
    from imgcls_cli.engine.device import resolve_device, resolve_precision
    from imgcls_cli.engine.predictor import prepare
    from imgcls_cli.export.runtime import load_for_inference

    dev = resolve_device(device)
    ckpt, model = load_for_inference(path, dev)
    model, amp, channels_last = prepare(model, ckpt["config"], dev, precision, resolve_precision(precision, dev))
    return Model(Path(path), [str(c) for c in ckpt["classes"]], ckpt, model, amp, channels_last, dev)


def _decode_all(items: Sequence[Any], channels: int,
                size: int) -> tuple[list[np.ndarray | None], list[str], list[str]]:
    """Each item as uint8 (channels, size, size), or None with its error; the names predictions carry."""
    from imgcls_cli.data.decode import DecodeError, convert_array, decode_image

    decoded: list[np.ndarray | None] = []
    names, errors = [], []
    for i, item in enumerate(items):
        try:
            if isinstance(item, (str, os.PathLike)):
                names.append(str(item))
                decoded.append(decode_image(item, channels, size))
            else:
                names.append(f"<image {i}>")
                decoded.append(convert_array(_as_array(item, i), channels, size))
            errors.append("")
        except (DecodeError, OSError) as exc:
            decoded.append(None)
            errors.append(str(exc) or type(exc).__name__)
    return decoded, names, errors


def _as_array(item: Any, index: int) -> np.ndarray:
    """A numpy array or a PIL image (RGB or gray; other modes converted to RGB) as an (H, W[, C]) array."""
    if hasattr(item, "mode") and hasattr(item, "convert"):  # a PIL image, without importing PIL
        item = item if item.mode in ("L", "RGB", "RGBA") else item.convert("RGB")
    array = np.asarray(item)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) or min(array.shape[:2]) < 1:
        raise UserError(f"image {index}: an array must be (H, W) gray or (H, W, 3|4) RGB(A), not {array.shape}.")
    return array


def _entry(row: dict[str, Any], topk: int, multilabel: bool = False) -> dict[str, Any]:
    """A multiclass model's entry: the top label and its probability. A multilabel model's: "labels" (each label at
    or above its threshold, with its probability), and "label" (those joined by '|')."""
    from imgcls_cli.engine.predict import prediction_json

    entry = prediction_json({**row, "path": row["input"]}, topk, multilabel)
    top = entry["topk"]
    if multilabel:
        return {"input": row["input"], "label": None if entry["error"] else row["label"],
                "labels": entry["labels"], "topk": top, "error": entry["error"]}
    return {"input": row["input"], "label": top[0]["label"] if top else None,
            "probability": top[0]["probability"] if top else None, "topk": top, "error": entry["error"]}


# ------------------------------------------------------------------------------------------- train, evaluate
def train(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`imgcls train OVERRIDES` in this process: summary.json's content, with "run_dir"."""
    run_dir = _run("train", overrides)
    return {**json.loads((run_dir / "summary.json").read_text(encoding="utf-8")), "run_dir": str(run_dir)}


def evaluate(overrides: Sequence[str]) -> dict[str, Any]:
    """`imgcls eval OVERRIDES` in this process: metrics.json's content (eval's summary), with "run_dir"."""
    run_dir = _run("eval", overrides)
    return {**json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")), "run_dir": str(run_dir)}


class _Tee(io.TextIOBase):
    """Writes to the stream the user sees and keeps a copy (the run directory and the error line are read back)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _run(command: str, overrides: Sequence[str]) -> Path:
    """Run the command as `imgcls COMMAND OVERRIDES` does; its run directory, or UserError with its one line."""
    from imgcls_cli.cli import main

    args = [str(a) for a in overrides] if not isinstance(overrides, str) else None
    if args is None:
        raise UserError(f"imgcls_cli.{command}() takes a list of overrides such as ['epochs=2'], not a string.")
    if {"-m", "--multirun", "--cfg", "-c", "--help", "-h"} & set(args):
        raise UserError(f"imgcls_cli.{command}() runs one run; sweeps and --cfg/--help are the CLI's "
                        f"(imgcls {command} ...).")
    saved_argv, saved_env = list(sys.argv), dict(os.environ)
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main([command, *args])
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv[:] = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    if status == 130:
        raise KeyboardInterrupt
    errors = [line[len("error: "):] for line in err.copy.getvalue().splitlines() if line.startswith("error: ")]
    if status != 0:
        raise UserError(errors[-1] if errors else f"imgcls {command} ended with exit status {status}")
    lines = [line for line in out.copy.getvalue().splitlines() if line.startswith("Run directory: ")]
    if not lines:
        raise RuntimeError(f"imgcls {command} printed no run directory")
    return Path(lines[-1][len("Run directory: "):])
