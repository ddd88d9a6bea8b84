"""The one exception type that means "the user asked for something wrong"."""


class UserError(Exception):
    """A mistake of the user: printed as one line on stderr, exit status 2, no traceback."""


class DivergedError(UserError):
    """The loss became non-finite: the run stops, keeps its last good checkpoint and is marked diverged."""


def as_float(value: object, key: str) -> float:
    """A config value as a float, or a UserError naming the key."""
    if isinstance(value, bool):
        raise UserError(f"{key} must be a number, not {value!r}.")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a number, not {value!r}.") from None


def as_int(value: object, key: str, minimum: int | None = None) -> int:
    """A config value as a whole number (>= minimum when given), or a UserError naming the key."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{key} must be a whole number, not {value!r}.")
    if minimum is not None and value < minimum:
        raise UserError(f"{key} must be a whole number >= {minimum}, not {value!r}.")
    return value
