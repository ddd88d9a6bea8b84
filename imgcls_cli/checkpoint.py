"""Checkpoints: plain dicts of tensors and containers, written atomically, read with weights_only=True and checked
field by field before anything is built from them."""
from __future__ import annotations

import contextlib
import math
import os
import pickle
import re
import stat
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

from imgcls_cli.errors import UserError
from imgcls_cli.rundir import atomic_writer
from imgcls_cli.specs.model import ModelSpec
from imgcls_cli.tasks import TASKS

FORMAT = "imgcls-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("model", "state_dict", "classes", "input", "config")

# What a checkpoint may hold. Sizes are far above any real run's and far below what exhausts a machine.
MAX_CHANNELS = 4
IMAGE_SIZES = (4, 4096)  # input.size, model.kwargs.image_size
MAX_CLASSES = 1_000_000
MAX_NAME = 1000  # characters of a class name
MAX_INT_KWARG = 1_000_000  # any whole-number model kwarg (widths, depth, hidden, ...)
MAX_FLOAT_KWARG = 1e6
MAX_LIST_KWARG = 256  # entries of a list kwarg (widths, block_config)
MAX_ENTRIES = 1_000_000  # files in the checkpoint's zip archive
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "ema", "rng", "best", "position", "distributed", "domain",
                  "throughput")
# What imgcls export writes: eval and predict run these files (export/runtime.py); training needs the .pt.
EXPORTED = {".onnx": "an exported ONNX model", ".pt2": "an exported torch.export program"}


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write to `.{name}.{pid}.tmp` beside `path`, then os.replace: a checkpoint on disk is always whole. A failed
    write (a full disk) is one line, removes the temporary file and leaves the previous checkpoint as it was."""
    with atomic_writer(path, "checkpoint ", sync=True) as f:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check an imgcls checkpoint; anything else is refused with one line, nothing in it executed, nothing
    built from it before every field was checked (types, sizes, finite weights that fit the model it names)."""
    path = Path(path)
    require_file(path)
    if path.suffix.lower() in EXPORTED:
        raise UserError(f"{path} is {EXPORTED[path.suffix.lower()]}, which imgcls eval and predict run; give "
                        "here the .pt checkpoint it was exported from (its metadata's imgcls.source).")
    check_archive(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if re.search(r"Unsupported global|GLOBAL|Unsupported class|unsupported .*REDUCE", str(exc), re.I):
            raise UserError(f"{path} holds pickled Python objects, not an imgcls checkpoint; "
                            "refusing to load it (nothing in it was run).") from None
        raise UserError(f"{path} is not an imgcls checkpoint (not a PyTorch checkpoint file); nothing in it was run.") from None
    except Exception as exc:  # any failure to read the file means it is not a whole checkpoint
        raise UserError(f"{path} is not a readable imgcls checkpoint (truncated, damaged or not a checkpoint"
                        f"{_first_sentence(exc)}).") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an imgcls checkpoint (no '{FORMAT}' format marker).")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format version {ckpt.get('format_version')!r}; "
                        f"this imgcls reads version {FORMAT_VERSION}.")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise UserError(f"{path} is an incomplete imgcls checkpoint (missing {', '.join(missing)}).")
    try:
        check_fields(ckpt)
        check_weights(ckpt)
    except Damaged as exc:
        raise UserError(f"damaged checkpoint: {path}: {exc}; it cannot be used (take another checkpoint, "
                        "or train again).") from None
    return ckpt


def require_file(path: Path, what: str = "a .pt file an imgcls run wrote") -> None:
    """A one-line error unless checkpoint= names a regular file (reading a FIFO or a device could block)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise UserError(f"checkpoint not found: {path}") from None
    if not stat.S_ISREG(mode):
        raise UserError(f"checkpoint={path} is not a regular file; give {what}.")


class Damaged(Exception):
    """What is wrong with a checkpoint's contents, in a few words."""


def _first_sentence(exc: BaseException) -> str:
    if isinstance(exc, (RuntimeError, OSError)) and str(exc):
        return ": " + re.split(r"(?<=[.:])\s", str(exc).strip())[0].rstrip(".:")
    return ""


# --------------------------------------------------------------------------------------------- the file
def check_archive(path: Path) -> None:
    """Refuse, from the zip's central directory alone, what torch.load would inflate: torch.save writes every entry
    stored (uncompressed), so the entries can never add up to more than the file holds. A compressed entry, or
    sizes beyond the file's, is a zip bomb or damage."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise UserError(f"cannot read the checkpoint {path}: {exc.strerror or exc}.") from None
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        if head.startswith(b"PK"):
            raise UserError(f"{path} is not a readable imgcls checkpoint (truncated, damaged or not a checkpoint: "
                            f"{str(exc).rstrip('.') or exc.__class__.__name__}).") from None
        if head[:1] == b"\x80":
            raise UserError(f"{path} is not an imgcls checkpoint (a pickle, not a PyTorch zip checkpoint); "
                            "refusing to load it (nothing in it was run).") from None
        raise UserError(f"{path} is not an imgcls checkpoint (not a PyTorch checkpoint file); "
                        "nothing in it was run.") from None
    if len(entries) > MAX_ENTRIES:
        raise UserError(f"damaged checkpoint: {path}: its archive lists {len(entries)} files.")
    total = 0
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size != entry.compress_size:
            raise UserError(f"damaged checkpoint: {path}: its entry {entry.filename} is compressed "
                            f"({entry.compress_size} bytes that would inflate to {entry.file_size}); imgcls "
                            "checkpoints are stored uncompressed, so this is not one (refused before reading it).")
        total += entry.file_size
        if entry.header_offset + entry.file_size > size or total > size:
            raise UserError(f"damaged checkpoint: {path}: its entries claim {total} bytes, more than the file's "
                            f"{size} (truncated or forged; refused before reading it).")


# --------------------------------------------------------------------------------------------- the fields
def check_fields(ckpt: dict[str, Any]) -> None:
    """Types and sizes of every field that is read from a checkpoint (raises Damaged)."""
    classes = ckpt["classes"]
    if not isinstance(classes, (list, tuple)) or not classes:
        raise Damaged(f"classes must be a non-empty list of names, not {_show(classes)}")
    if len(classes) > MAX_CLASSES:
        raise Damaged(f"it lists {len(classes)} classes (at most {MAX_CLASSES})")
    bad = [c for c in classes if not isinstance(c, str) or not c or len(c) > MAX_NAME]
    if bad:
        bad = bad[0]
        raise Damaged(f"classes must be names (text of 1 to {MAX_NAME} characters), not {_show(bad)}")
    if len(set(classes)) != len(classes):
        seen: set[str] = set()
        twice = next(c for c in classes if c in seen or seen.add(c))  # type: ignore[func-returns-value]
        raise Damaged(f"class {twice!r} appears twice in classes")

    inp = ckpt["input"]
    if not isinstance(inp, dict):
        raise Damaged(f"input must be a mapping of channels, size, mean and std, not {_show(inp)}")
    channels = _whole(inp.get("channels"), "input.channels", 1, MAX_CHANNELS)
    _whole(inp.get("size"), "input.size", *IMAGE_SIZES)
    for key in ("mean", "std"):
        values = inp.get(key)
        if not isinstance(values, (list, tuple)) or len(values) != channels:
            raise Damaged(f"input.{key} must list {channels} number(s), one per channel, not {_show(values)}")
        if not all(_real(v) and math.isfinite(v) and abs(v) <= 1e3 for v in values):
            raise Damaged(f"input.{key} must hold finite numbers, not {_show(values)}")
        if key == "std" and not all(v > 0 for v in values):
            raise Damaged(f"input.std must be positive, not {_show(values)}")

    model = ckpt["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise Damaged(f"model must be a mapping with a name and kwargs, not {_show(model)}")
    from imgcls_cli.models import MODELS

    if model["name"] not in MODELS:
        raise Damaged(f"it names a model this imgcls does not have: {model['name'][:100]!r} "
                      f"(its models: {', '.join(MODELS.names())})")
    check_kwargs(model["name"], model.get("kwargs", {}), classes, channels)

    if not isinstance(ckpt["config"], dict):
        raise Damaged(f"config must be a mapping (the run's resolved config), not {_show(ckpt['config'])}")
    dataset = ckpt["config"].get("dataset", {})
    if not isinstance(dataset, dict) or not isinstance(dataset.get("name", ""), str):
        raise Damaged(f"config.dataset must be a mapping with a dataset name, not {_show(dataset)}")
    if ckpt.get("metrics") is not None and not isinstance(ckpt["metrics"], dict):
        raise Damaged(f"metrics must be a mapping, not {_show(ckpt['metrics'])}")
    for key in ("epoch", "step"):
        if key in ckpt and ckpt[key] is not None:
            _whole(ckpt[key], key, 0, 10**12)
    for key in TRAINING_STATE:
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise Damaged(f"{key} must be a mapping, not {_show(ckpt[key])}")
    if ckpt.get("task") is not None and ckpt["task"] not in TASKS:
        raise Damaged(f"task must be one of {', '.join(TASKS)}, not {_show(ckpt['task'])}")
    if ckpt.get("task") == "multilabel":
        _check_thresholds(ckpt.get("thresholds"), len(classes))


def _check_thresholds(thresholds: Any, labels: int) -> None:
    """A multilabel checkpoint's thresholds: one probability in (0, 1) per label."""
    if not isinstance(thresholds, (list, tuple)) or len(thresholds) != labels or not all(
            _real(t) and 0.0 < float(t) < 1.0 for t in thresholds):
        raise Damaged(f"thresholds must list {labels} probabilities in (0, 1), one per label, not "
                      f"{_show(thresholds)}")


def check_kwargs(name: str, kwargs: Any, classes: list[str], channels: int) -> None:
    """model.kwargs: plain values of sane size that agree with the classes and the input, each in its range as a
    model config's would be (ModelSpec; raises Damaged)."""
    if not isinstance(kwargs, dict):
        raise Damaged(f"model.kwargs must be a mapping, not {_show(kwargs)}")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise Damaged(f"model.kwargs has a key that is not a name: {_show(key)}")
        label = f"model.kwargs.{key}"
        if isinstance(value, (list, tuple)):
            if len(value) > MAX_LIST_KWARG:
                raise Damaged(f"{label} lists {len(value)} values (at most {MAX_LIST_KWARG})")
            for item in value:
                _plain(item, label)
        else:
            _plain(value, label)
    if "num_classes" in kwargs and kwargs["num_classes"] != len(classes):
        raise Damaged(f"model.kwargs.num_classes is {_show(kwargs['num_classes'])} but it lists {len(classes)} "
                      "classes")
    if "in_channels" in kwargs and kwargs["in_channels"] != channels:
        raise Damaged(f"model.kwargs.in_channels is {_show(kwargs['in_channels'])} but input.channels is {channels}")
    if kwargs.get("image_size") is not None:
        _whole(kwargs["image_size"], "model.kwargs.image_size", *IMAGE_SIZES)
    try:
        ModelSpec.from_config({**kwargs, "name": name})
    except UserError as exc:
        raise Damaged(str(exc).rstrip(".")) from None


def _plain(value: Any, label: str) -> None:
    """A value a file may hold for a model kwarg: a plain value of a size no real model reaches."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        if len(value) > 200:
            raise Damaged(f"{label} is a text of {len(value)} characters")
        return
    if isinstance(value, int):
        if not 0 <= value <= MAX_INT_KWARG:
            raise Damaged(f"{label} must be a whole number from 0 to {MAX_INT_KWARG}, not {_show(value)}")
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_FLOAT_KWARG:
            raise Damaged(f"{label} must be a finite number, not {_show(value)}")
        return
    raise Damaged(f"{label} must be a plain value (number, text, true/false, null or a list of those), "
                  f"not {_show(value)}")


def _whole(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Damaged(f"{name} must be a whole number from {low} to {high}, not {_show(value)}")
    return value


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """A value for a one-line message: its repr, cut short, or its type for a tensor."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------- the weights
def check_weights(ckpt: dict[str, Any]) -> None:
    """state_dict: names -> tensors that fit in what the file holds, the very shapes of the model its kwargs
    describe (checked on the meta device: nothing allocated), all of them finite (raises Damaged)."""
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not state:
        raise Damaged(f"state_dict must be a non-empty mapping of names to tensors, not {_show(state)}")
    for key, tensor in state.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise Damaged(f"state_dict must map names to tensors; {_show(key)} holds {_show(tensor)}")
        if tensor.layout != torch.strided or tensor.is_quantized:
            raise Damaged(f"state_dict[{key!r}] is not a plain tensor ({tensor.layout})")
        if tensor.numel() * tensor.element_size() > tensor.untyped_storage().nbytes():
            raise Damaged(f"state_dict[{key!r}] claims {tensor.numel()} values over a storage of "
                          f"{tensor.untyped_storage().nbytes()} bytes")
    inp = ckpt["input"]
    spec = ModelSpec(ckpt["model"]["name"], ckpt["model"].get("kwargs", {}))  # checked by check_fields
    expected = model_shapes(spec, len(state), (inp["channels"], inp["size"], len(ckpt["classes"])))
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)} instead of {expected[wrong[0]]}" if wrong else ""]
        raise Damaged(f"its weights do not fit model '{ckpt['model']['name']}' with its kwargs: "
                      + ", ".join(p for p in parts if p))
    for key, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise Damaged(f"it holds non-finite weights (NaN or infinity) in {key}")


def model_shapes(spec: ModelSpec, num_tensors: int,
                 io: tuple[int, int, int] | None = None) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of the model that spec describes, on the meta device (no memory for weights). A build
    that registers far more tensors than the checkpoint holds is stopped early, so absurd depths cannot exhaust the
    machine either; a build that fails is Damaged, in one line.

    io: (channels, size, classes): the model must also take a batch of that input and give one score per class
    (run on the meta device too: shapes only, no arithmetic)."""
    from imgcls_cli.models import create_model

    name, limit = spec.name, 4 * num_tensors + 1000
    try:
        with torch.device("meta"):
            with _registration_limit(limit):
                model = create_model(spec, for_checkpoint=True)
            if io is not None:
                _check_runs_at(model.eval(), name, *io)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}
    except Damaged:
        raise
    except _TooBig:
        raise Damaged(f"its model kwargs describe a model of more than {limit} tensors, far more than the "
                      f"{num_tensors} it holds") from None
    except UserError as exc:
        raise Damaged(str(exc).rstrip(".")) from None
    except Exception as exc:  # a builder's TypeError/ValueError/RuntimeError on values it cannot take
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise Damaged(f"model '{name}' cannot be built from its kwargs ({first})") from None


def _check_runs_at(model: torch.nn.Module, name: str, channels: int, size: int, classes: int) -> None:
    try:
        with torch.no_grad():
            out = model(torch.empty(2, channels, size, size, device="meta"))
    except Exception as exc:  # a layer that does not fit the input (too small an image, a wrong flattened size)
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        raise Damaged(f"model '{name}' cannot take its input of {channels}x{size}x{size} images ({first})") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise Damaged(f"model '{name}' gives outputs of shape {shape} for a batch of 2, not one score for each of "
                      f"its {classes} classes")


class _TooBig(Exception):
    pass


@contextlib.contextmanager
def _registration_limit(limit: int) -> Iterator[None]:
    """Raise _TooBig inside a model build once it has registered more than `limit` parameters, buffers or modules."""
    from torch.nn.modules import module as nn_module

    count = [0]

    def hook(*_: Any) -> None:
        count[0] += 1
        if count[0] > limit * 3:
            raise _TooBig()

    handles = [nn_module.register_module_parameter_registration_hook(hook),
               nn_module.register_module_buffer_registration_hook(hook),
               nn_module.register_module_module_registration_hook(hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
