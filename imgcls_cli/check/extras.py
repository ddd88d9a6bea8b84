"""The libraries of the `check` extra (imagehash, cleanlab): a missing one is a one-line error naming the extra."""
from __future__ import annotations

import importlib

from imgcls_cli.errors import UserError

INSTALL = "pip install 'imgcls[check]'"


def require(module: str, what: str) -> None:
    """A UserError naming the extra when `module` cannot be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs {module.split('.')[0]}, which is not installed: {INSTALL}") from None
