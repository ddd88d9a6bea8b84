"""`.pt2` files: the torch.export program (export.trace) saved with torch.export.save, the imgcls metadata inside as
the extra file `imgcls.json` (export.metadata.EXTRA_FILE) and beside it as `<file>.json`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from imgcls_cli.export.metadata import EXTRA_FILE
from imgcls_cli.export.trace import quiet
from imgcls_cli.rundir import atomic_writer, write_text_atomic


def write(program: torch.export.ExportedProgram, path: Path, props: Mapping[str, str]) -> int:
    """The program and its metadata as one file at path, written atomically; its size in bytes."""
    with atomic_writer(path, ".pt2 file ") as f, quiet():
        torch.export.save(program, f, extra_files={EXTRA_FILE: json.dumps(dict(props), indent=1)})
    return path.stat().st_size


def write_sidecar(path: Path, props: Mapping[str, str]) -> Path:
    """`<file>.json`: the metadata a .pt2 holds, for people and tools that do not open the archive."""
    sidecar = path.with_name(path.name + ".json")
    write_text_atomic(sidecar, json.dumps(dict(props), indent=2) + "\n")
    return sidecar


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata strings a .pt2 file carries (its extra file), without running or building its program."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
        return json.loads(archive.read(names[0])) if names else {}


def load(path: str | Path) -> torch.nn.Module:
    """The .pt2 file's program as a module to call (a batch in, logits out)."""
    with quiet():
        return torch.export.load(str(path)).module()
