"""The device keys every command shares, checked by name (what the machine has is the engine's to find out)."""
from __future__ import annotations

from typing import Any

from imgcls_cli.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(name: Any) -> str:
    if name not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not '{name}'.")
    return name


def check_channels_last(setting: Any) -> str | bool:
    """auto, true or false."""
    if setting == "auto" or isinstance(setting, bool):
        return setting
    raise UserError(f"channels_last must be auto, true or false, not '{setting}'.")
