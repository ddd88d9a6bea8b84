"""What an exported model carries so that it runs without imgcls: its classes, its input (channels, size, mean,
std), the model it came from and that checkpoint's sha256. ONNX keeps these as `metadata_props` (string to
string); a .pt2 keeps the same strings in its extra file `imgcls.json`, and `<file>.json` beside it is a copy for
people. Values that are not strings are JSON."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from imgcls_cli import __version__
from imgcls_cli.data.inputs import InputSpec
from imgcls_cli.errors import UserError

FORMAT = "imgcls-export"
FORMAT_VERSION = "1"
PREFIX = "imgcls."
# key -> what it holds
KEYS = {
    "format": f"'{FORMAT}'",
    "format_version": "the version of these keys",
    "version": "the imgcls version that exported it",
    "classes": "JSON list of the class names, in output order",
    "input": 'JSON {"channels", "size", "mean", "std"}: NCHW float32 input, (pixel/255 - mean) / std',
    "model": 'JSON {"name", "kwargs"} of the registered model',
    "task": "multiclass | multilabel",
    "thresholds": "JSON list of each label's probability threshold (multilabel; empty for multiclass)",
    "source_sha256": "sha256 of the checkpoint file it was exported from",
    "source": "that checkpoint's path when exported",
    "config": "JSON of the training run's dataset, seed and eval_batch_size (eval's test split)",
    "quantize": "none | int8_static | int8_dynamic",
}
REQUIRED = ("format", "classes", "input")  # what predict needs; eval needs config too
EXTRA_FILE = "imgcls.json"  # the .pt2 archive's extra file holding the same strings


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def from_checkpoint(ckpt: Mapping[str, Any], source: str | Path, sha256: str, quantize: str = "none"
                    ) -> dict[str, str]:
    """The metadata strings of an export of `ckpt` (loaded from `source`, whose file hash is `sha256`)."""
    config = ckpt.get("config") or {}
    kept = {k: config[k] for k in ("dataset", "seed", "eval_batch_size") if k in config}
    values = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "version": __version__,
        "classes": json.dumps([str(c) for c in ckpt["classes"]]),
        "input": json.dumps(InputSpec.from_checkpoint(ckpt).as_dict()),
        "model": json.dumps({"name": ckpt["model"]["name"], "kwargs": ckpt["model"].get("kwargs", {})}),
        "task": str(ckpt.get("task") or "multiclass"),
        "thresholds": json.dumps([float(t) for t in ckpt.get("thresholds") or []]),
        "source_sha256": sha256, "source": str(source),
        "config": json.dumps(kept, default=str),
        "quantize": quantize,
    }
    return {PREFIX + k: v for k, v in values.items()}


@dataclass(frozen=True)
class Deployed:
    """An exported model's metadata, read back and checked."""

    classes: tuple[str, ...]
    input: InputSpec
    model: dict[str, Any]
    config: dict[str, Any]
    props: dict[str, str]

    def as_checkpoint(self) -> dict[str, Any]:
        """The fields of a checkpoint that eval and predict read (no weights: those are in the file)."""
        return {"model": self.model, "classes": list(self.classes), "input": self.input.as_dict(),
                "config": dict(self.config), "task": self.props.get(PREFIX + "task", "multiclass"),
                "thresholds": json.loads(self.props.get(PREFIX + "thresholds") or "[]") or None, "epoch": None}


def parse(props: Mapping[str, str], where: str) -> Deployed:
    """The metadata of an exported file, or one line naming the keys that are missing or not valid."""
    missing = [PREFIX + k for k in REQUIRED if PREFIX + k not in props]
    if missing:
        raise UserError(f"{where} has no imgcls metadata ({', '.join(missing)} missing); export it with "
                        "imgcls export checkpoint=PATH, which records the classes and input it needs.")
    if props[PREFIX + "format"] != FORMAT:
        raise UserError(f"{where}: {PREFIX}format is {props[PREFIX + 'format']!r}, not '{FORMAT}'.")
    try:
        classes = json.loads(props[PREFIX + "classes"])
        spec = InputSpec.from_dict(json.loads(props[PREFIX + "input"]))
        model = json.loads(props.get(PREFIX + "model", "{}"))
        config = json.loads(props.get(PREFIX + "config", "{}"))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{where}: its imgcls metadata is damaged ({exc.__class__.__name__}: {exc}).") from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{where}: {PREFIX}classes is not a list of class names.")
    if not 1 <= spec.channels <= 4 or not 4 <= spec.size <= 4096 or len(spec.mean) != spec.channels or \
            len(spec.std) != spec.channels or not all(s > 0 for s in spec.std):
        raise UserError(f"{where}: {PREFIX}input is not a valid input (channels 1-4, size 4-4096, a positive "
                        "std per channel).")
    if not isinstance(model, dict) or not isinstance(config, dict):
        raise UserError(f"{where}: {PREFIX}model and {PREFIX}config must be JSON objects.")
    return Deployed(tuple(classes), spec, model, config, dict(props))
