"""Models for eval and predict from any file they accept: an imgcls checkpoint (.pt), an ONNX model run by ONNX
Runtime (.onnx) or a torch.export program (.pt2). Each loader gives the checkpoint fields eval and predict read
(an exported file's from its imgcls metadata) and a module that takes a float32 NCHW batch, already normalized,
and returns float32 logits."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from imgcls_cli.checkpoint import load_checkpoint, require_file
from imgcls_cli.errors import UserError
from imgcls_cli.export import metadata
from imgcls_cli.models import MODELS, create_model
from imgcls_cli.registry import Registry

log = logging.getLogger("imgcls")
Loader = Callable[[Path, torch.device], "tuple[dict[str, Any], nn.Module]"]
LOADERS: Registry[Loader] = Registry("model file suffix")  # any suffix not registered is an imgcls checkpoint's
INSTALL = "pip install 'imgcls[export]'"


def load_for_inference(path: str | Path, device: torch.device) -> tuple[dict[str, Any], nn.Module]:
    """(the checkpoint fields eval and predict read, the model on `device` in eval mode) of the file at path."""
    path = Path(path)
    suffix = path.suffix.lower()
    return LOADERS.get(suffix if suffix in LOADERS else ".pt")(path, device)


class ExportedModel(nn.Module):
    """An exported file's model: it runs as it was exported (eval mode, float32, NCHW), and its graph gives the
    logits alone (no embeddings)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = str(path)

    def train(self, mode: bool = True) -> ExportedModel:
        return self  # a deployed graph has no training mode (an exported program refuses eval() itself)


# --------------------------------------------------------------------------------------------- .pt
@LOADERS.register(".pt")
def _checkpoint(path: Path, device: torch.device) -> tuple[dict[str, Any], nn.Module]:
    ckpt = load_checkpoint(path)
    return ckpt, model_from_checkpoint(ckpt, device)


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> nn.Module:
    """Rebuild the registered model with its saved kwargs and load the weights (eval mode)."""
    spec = ckpt["model"]
    if not isinstance(spec, dict) or spec.get("name") not in MODELS:
        raise UserError(f"the checkpoint names a model this imgcls does not have: {spec.get('name')!r}.")
    model = create_model(spec["name"], for_checkpoint=True, **spec.get("kwargs", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"the checkpoint's weights do not fit model '{spec['name']}': {first}") from None
    return model.to(device).eval()


def _fields(props: dict[str, str], path: Path) -> tuple[metadata.Deployed, dict[str, Any]]:
    """The metadata and the checkpoint fields of an exported file; `source` is the checkpoint it was exported
    from, whose run's splits.csv says which images it learned from."""
    deployed = metadata.parse(props, str(path))
    return deployed, {**deployed.as_checkpoint(), "source": props.get(metadata.PREFIX + "source") or None}


def _check_input(path: Path, shape: list[Any], deployed: metadata.Deployed) -> None:
    """A one-line error unless the graph takes (batch, channels, size, size) as its metadata says, with a batch
    of any size."""
    spec = deployed.input
    want = [spec.channels, spec.size, spec.size]
    dims = [d if isinstance(d, int) else None for d in shape]
    if len(dims) != 4 or any(d is not None and d != w for d, w in zip(dims[1:], want)):
        shown = "x".join("?" if d is None else str(d) for d in dims)
        raise UserError(f"{path} takes inputs of shape {shown}, but its imgcls metadata says "
                        f"batch x {'x'.join(map(str, want))}; the file and its metadata do not belong together "
                        "(export it again with imgcls export).")
    if dims[0] is not None:
        raise UserError(f"{path} was exported for batches of exactly {dims[0]} image(s); export it with a dynamic "
                        "batch axis (imgcls export does).")


# --------------------------------------------------------------------------------------------- .onnx
class OnnxModel(ExportedModel):
    """An ONNX Runtime session as a module: the batch goes to it as a contiguous float32 numpy array, the logits
    come back on the batch's device."""

    def __init__(self, path: Path, session: Any, input_name: str, output_name: str) -> None:
        super().__init__(path)
        self.session, self.input_name, self.output_name = session, input_name, output_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([self.output_name], {self.input_name: batch})
        return torch.from_numpy(logits).to(x.device, torch.float32)


@LOADERS.register(".onnx")
def _onnx(path: Path, device: torch.device) -> tuple[dict[str, Any], nn.Module]:
    require_file(path, "a .pt, .onnx or .pt2 file")
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError(f"checkpoint={path} needs onnxruntime: {INSTALL}") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    options.log_severity_level = 3  # errors only: its warnings about the graph are not the user's to act on
    try:
        session = ort.InferenceSession(str(path), options, providers=_providers(ort, device))
    except Exception as exc:  # onnxruntime's own exception types: a file it cannot read is not a model
        raise UserError(f"{path} is not a readable ONNX model (truncated, damaged or not ONNX: {_ort_reason(exc)})."
                        ) from None
    deployed, ckpt = _fields(dict(session.get_modelmeta().custom_metadata_map), path)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)":
        raise UserError(f"{path} takes {len(inputs)} input(s) ({', '.join(i.type for i in inputs)}); an imgcls model "
                        "takes one float32 batch of images.")
    _check_input(path, list(inputs[0].shape), deployed)
    output = next((o for o in outputs if o.name == "logits"), outputs[0])
    classes = output.shape[-1] if output.shape else None
    if isinstance(classes, int) and classes != len(deployed.classes):
        raise UserError(f"{path} gives {classes} scores an image but its imgcls metadata lists "
                        f"{len(deployed.classes)} classes; export it again with imgcls export.")
    if device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        log.info(f"{path.name}: onnxruntime runs on the CPU here (no CUDAExecutionProvider: pip install "
                 "onnxruntime-gpu for the GPU)")
    return ckpt, OnnxModel(path, session, inputs[0].name, output.name)


def _providers(ort: Any, device: torch.device) -> list[Any]:
    """CUDA first where the device is a GPU and this onnxruntime has it, the CPU always."""
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _ort_reason(exc: Exception) -> str:
    """'[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from x failed:...' -> 'INVALID_PROTOBUF'."""
    text = str(exc).strip()
    match = re.search(r"\]\s*:\s*\d+\s*:\s*([A-Z_]+)", text)
    return match.group(1) if match else (text.splitlines() or [exc.__class__.__name__])[0][:200]


# --------------------------------------------------------------------------------------------- .pt2
class ProgramModel(ExportedModel):
    """A torch.export program's module (its graph, as exported from the model in eval mode)."""

    def __init__(self, path: Path, program: nn.Module) -> None:
        super().__init__(path)
        self.program = program

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x).float()


@LOADERS.register(".pt2")
def _program(path: Path, device: torch.device) -> tuple[dict[str, Any], nn.Module]:
    require_file(path, "a .pt, .onnx or .pt2 file")
    deployed, ckpt = _fields(_archive_metadata(path), path)
    try:
        with _quiet_torch_export():
            program = torch.export.load(path)
    except Exception as exc:  # torch's loader raises many types for a damaged archive
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise UserError(f"{path} is not a readable torch.export program (damaged or of another torch version: "
                        f"{first}).") from None
    user_inputs = list(program.graph_signature.user_inputs)
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    if len(user_inputs) != 1 or not isinstance(values.get(user_inputs[0]), torch.Tensor):
        raise UserError(f"{path} takes {len(user_inputs)} inputs; an imgcls model takes one batch of images.")
    _check_input(path, list(values[user_inputs[0]].shape), deployed)
    from torch.export.passes import move_to_device_pass

    # the graph's own device arguments move too, not only its weights (what Module.to would do)
    return ckpt, ProgramModel(path, move_to_device_pass(program, device).module())


def _archive_metadata(path: Path) -> dict[str, str]:
    """The imgcls metadata of a .pt2 archive (its extra file imgcls.json), read with zipfile before torch reads
    anything; an archive whose weights or constants torch would unpickle (code that runs on loading) is refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(n.endswith("/archive_format") for n in names):
                raise UserError(f"{path} is not a torch.export program (a zip archive without archive_format); "
                                "give a .pt2 file that imgcls export wrote.")
            packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
            if packed:  # torch.export.save stores every entry: a compressed one could inflate without bound
                raise UserError(f"{path} is not a torch.export program as torch writes them (its entry {packed[0]} "
                                "is compressed); refused before reading it.")
            _refuse_pickles(path, archive, names)
            found = [n for n in names if n.endswith(f"/extra/{metadata.EXTRA_FILE}")]
            text = archive.read(found[0]).decode("utf-8") if found else "{}"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise UserError(f"{path} is not a readable torch.export program (truncated, damaged or not a .pt2 "
                        f"archive: {str(exc).rstrip('.') or exc.__class__.__name__}).") from None
    try:
        props = json.loads(text)
    except ValueError:
        props = None
    if not isinstance(props, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in props.items()):
        raise UserError(f"{path}: its {metadata.EXTRA_FILE} is not a JSON object of strings; export it again with "
                        "imgcls export.")
    return props


def _refuse_pickles(path: Path, archive: zipfile.ZipFile, names: list[str]) -> None:
    """What torch.export.load would unpickle: weights or constants marked use_pickle, custom or opaque objects
    (their config files say so), and .pt entries (sample inputs, the legacy layout) that do not load as plain
    tensors. Refused in one line: nothing in the file is run."""
    pickled = []
    for name in names:
        if name.endswith("_config.json") and "/data/" in name:
            config = json.loads(archive.read(name))
            entries = config.get("config") if isinstance(config, dict) else None
            for key, entry in (entries if isinstance(entries, dict) else {name: None}).items():
                if not isinstance(entry, dict) or entry.get("use_pickle") or \
                        not str(entry.get("path_name", "")).startswith(("weight_", "tensor_")):
                    pickled.append(key)
        elif name.endswith(".pt"):
            try:
                torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - anything weights_only refuses would be unpickled in full
                pickled.append(name)
    if pickled:
        raise UserError(f"{path} holds pickled Python objects ({pickled[0]}), which loading it would run; refusing "
                        "it (nothing in it was run).")


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export.load logs a traceback for every layout it tries before the one that fits: not the user's."""
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
