"""The one exception type that means "the user asked for something wrong"."""
from __future__ import annotations

# The largest whole number any config key takes (a signed 64-bit integer): beyond it torch, numpy and the file
# formats overflow, so a larger value is refused in one line wherever as_int reads it.
MAX_WHOLE = 2**63 - 1
SHOWN_CHARS = 80  # a value echoed in an error message is cut to this many characters


class UserError(Exception):
    """A mistake of the user: printed as one line on stderr, exit status 2, no traceback."""


class DivergedError(UserError):
    """The loss became non-finite: the run stops, keeps its last good checkpoint and is marked diverged."""


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """value as an error message shows it (a string quoted): one line, cut after limit characters, so that a
    5,000-character option still gives a readable line."""
    text = (value if isinstance(value, str) else str(value)).replace("\n", "\\n").replace("\r", "\\r")
    cut = text if len(text) <= limit else text[:limit] + "..."
    quoted = f"'{cut}'" if isinstance(value, str) else cut
    return quoted if cut == text else f"{quoted} ({len(text)} characters)"


def as_float(value: object, key: str) -> float:
    """A config value as a float, or a UserError naming the key."""
    if isinstance(value, bool):
        raise UserError(f"{key} must be a number, not {shown(value)}.")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{key} must be a number, not {shown(value)}.") from None


def as_int(value: object, key: str, minimum: int | None = None, maximum: int = MAX_WHOLE) -> int:
    """A config value as a whole number in [minimum, maximum] (maximum: by default the largest a 64-bit integer
    holds), or a UserError naming the key."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{key} must be a whole number, not {shown(value)}.")
    if (minimum is not None and value < minimum) or value > maximum:
        if minimum is None:
            bound = f"<= {maximum}"
        else:  # the default maximum only shows where it is what was passed
            bound = f">= {minimum}" if maximum == MAX_WHOLE and value < minimum else f"in [{minimum}, {maximum}]"
        raise UserError(f"{key} must be a whole number {bound}, not {shown(value)}.")
    return value
