"""ONNX files: an ExportedProgram converted by torch.onnx's dynamo exporter (onnxscript), input "input" and output
"logits" with a dynamic "batch" axis, the imgcls metadata (export.metadata) as the model's metadata_props."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch

from imgcls_cli.errors import UserError
from imgcls_cli.export.trace import BATCH, failure_message, quiet
from imgcls_cli.rundir import atomic_writer

if TYPE_CHECKING:
    import onnx

INPUT, OUTPUT = "input", "logits"
PACKAGES = ("onnx", "onnxscript", "onnxruntime")
PROTOBUF_LIMIT = 2**31 - 1  # bytes: one ONNX file without external data


def require() -> None:
    """onnx, onnxscript and onnxruntime import, or one line saying what to install."""
    for package in PACKAGES:
        try:
            importlib.import_module(package)
        except (ImportError, OSError):
            raise UserError(f"format=onnx needs onnx, onnxscript and onnxruntime ({package} is missing or does not "
                            "load): pip install 'imgcls[export]'") from None


def convert(program: torch.export.ExportedProgram, opset: int, name: str) -> onnx.ModelProto:
    """The program as an ONNX model of that opset; an operator without an ONNX conversion is one line naming it."""
    try:
        with quiet():
            exported = torch.onnx.export(program, dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                         opset_version=opset, optimize=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - every converter failure is the model's, reported in one line
        raise UserError(failure_message(exc, name, "torch.onnx (opset " + str(opset) + ")")) from None
    proto = exported.model_proto
    if proto.opset_import and all(o.version != opset for o in proto.opset_import if o.domain in ("", "ai.onnx")):
        import onnx

        raise UserError(f"model '{name}' could not be written in ONNX opset {opset}: this onnx writes opsets up to "
                        f"{onnx.defs.onnx_opset_version()}; choose opset= 18 to that (ONNX Runtime may run fewer).")
    _name_batch_axis(proto)
    return proto


def _name_batch_axis(proto: onnx.ModelProto) -> None:
    """The input's symbolic first axis (torch.export's s0, s77...) is called "batch" wherever it appears."""
    first = proto.graph.input[0].type.tensor_type.shape.dim[0]
    symbol = first.dim_param
    if not symbol:
        return
    graph = proto.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = BATCH


def set_metadata(proto: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """props as the model's metadata_props (replacing entries of the same keys, keeping the exporter's others)."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props (weights stored outside the file are not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def has_convolutions(proto: onnx.ModelProto) -> bool:
    """Whether the graph (or a function it calls) convolves: static quantization pays off there."""
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    return any(n.op_type in ("Conv", "ConvTranspose") for n in nodes)


def write(proto: onnx.ModelProto, path: Path, what: str = "ONNX file ") -> int:
    """The model as one file at path, written atomically; its size in bytes."""
    data = proto.SerializeToString() if proto.ByteSize() <= PROTOBUF_LIMIT else None
    if data is None:
        raise UserError(f"{path.name}: the model is larger than the 2 GB an ONNX file holds without external data; "
                        "export format=torch_export instead.")
    with atomic_writer(path, what) as f:
        f.write(data)
    return len(data)
