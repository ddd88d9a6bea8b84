"""Registry: a strict name -> builder table with did-you-mean errors."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from imgcls_cli.errors import UserError, shown

T = TypeVar("T", bound=Callable)


class UnknownNameError(UserError):
    """A name that no entry of a registry has."""


class Registry(Generic[T]):
    """Maps names to builders; refuses duplicates; unknown names list close matches and all choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(fn: T) -> T:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"An entry is already registered under the name '{key}'.")
            self._entries[key] = fn
            return fn

        return decorator

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {shown(str(name))}.{hint} Choices: {', '.join(self.names())}."

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
