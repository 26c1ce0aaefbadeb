"""A small name → factory registry shared by the variant and backbone registries."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message names every choice."""

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0])


class Registry(Generic[F]):
    """Maps names to factories; registering a name twice is an error.

    Args:
        kind: What the registry holds, used in error messages ("downsampling variant").

    Example:
        >>> pools = Registry("pool")
        >>> @pools.register("max")
        ... def make_max():
        ...     return "max"
        >>> pools.get("max")()
        'max'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, F] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator that registers a factory under ``name`` (default: its ``__name__``)."""

        def wrap(fn: F) -> F:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = fn
            return fn

        return wrap

    def get(self, name: str) -> F:
        """The factory registered as ``name``; an unknown name raises `UnknownNameError`."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choices: {', '.join(self.names())}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
