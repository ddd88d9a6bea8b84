"""A model as a torch.export program with a dynamic batch axis (what the .pt2 file holds and the ONNX file is converted
from), and the one line that says why a model could not be exported: the operator, or the line of code, it failed
on."""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from typing import Iterator

import torch
from torch import nn

from imgcls_cli.data.inputs import InputSpec
from imgcls_cli.errors import UserError

TRACE_BATCH = 2  # the example batch: 1 would be specialised, and the batch axis would not stay dynamic
BATCH = "batch"  # the batch axis's name in the ONNX file


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """The exporters' progress lines, warnings and graph dumps kept off the terminal (what they printed is in the
    yielded buffer): a failure is reported in one line by the caller."""
    buffer = io.StringIO()
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        logging.disable(logging.NOTSET)


def example_input(spec: InputSpec, batch: int = TRACE_BATCH) -> torch.Tensor:
    """A normalized-looking batch of the model's input shape (values only matter for tracing, not the result)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, spec.channels, spec.size, spec.size, generator=generator)


def trace(model: nn.Module, spec: InputSpec, name: str) -> torch.export.ExportedProgram:
    """The eval-mode model as an ExportedProgram whose batch axis is dynamic (1 and up); a model torch.export cannot
    trace is one line naming the operator or the line of code (failure_message)."""
    batch = torch.export.Dim(BATCH, min=1)
    try:
        with quiet(), torch.no_grad():
            return torch.export.export(model.eval(), (example_input(spec),), dynamic_shapes=({0: batch},))
    except Exception as exc:  # noqa: BLE001 - every exporter failure is the model's, reported in one line
        raise UserError(failure_message(exc, name, "torch.export")) from None


_NO_FUNCTION = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>")
_TARGET = re.compile(r"target=torch\.ops\.([\w.]+)")
_UNSUPPORTED = re.compile(r"(?:unsupported|not supported|no (?:decomposition|kernel|implementation)|cannot handle)"
                          r"[^\n]*?\b((?:aten|prims|torchvision|quantized)\.\w+(?:\.\w+)?)", re.I)
_CALL = re.compile(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in (\w+)\s*\n\s*(.+)')


def failing_op(text: str) -> str | None:
    """The operator an exporter's message names as the one it could not convert or trace, if any."""
    for pattern in (_NO_FUNCTION, _TARGET, _UNSUPPORTED):
        match = pattern.search(text)
        if match:
            op = ".".join(g for g in match.groups() if g)
            return op.removesuffix(".default")
    return None


def _messages(exc: BaseException) -> str:
    """The exception's text and that of its causes."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "\n".join(parts)


def failure_message(exc: BaseException, name: str, exporter: str) -> str:
    """One line: which model could not be exported, by which exporter, and why (the operator, else the code line
    of data-dependent control flow, else the exporter's own first sentence)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", _messages(exc))
    op = failing_op(text)
    head = f"model '{name}' cannot be exported with {exporter}"
    if op is not None:
        return f"{head}: operator {op} has no conversion; choose another model (or opset=) or replace that operator."
    call = _CALL.search(text)
    if call is not None:
        file, line, function, code = call.groups()
        return (f"{head}: data-dependent control flow at `{code.strip()}` ({function}, {file}:{line}); make the "
                "model's forward independent of the input's values.")
    summary = text.split("## Exception summary", 1)[-1]
    detail = next((ln.strip() for ln in summary.splitlines() if ln.strip() and not ln.startswith("#")), "")
    detail = re.sub(r"^<class '[\w.]+\.(\w+)'>:", r"\1:", detail)
    return f"{head}: {detail[:300]}"
