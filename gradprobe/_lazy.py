"""Package attributes loaded from their modules on first use (PEP 562), for package roots that
must stay light to import (`gradprobe` and its speed subpackage)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def lazy_attributes(
    package: str,
    namespace: dict[str, Any],
    exports: dict[str, str],
    submodules: Iterable[str] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names load on first use.

    Args:
        package: The package's ``__name__``.
        namespace: Its ``globals()``: a loaded name is stored there, so later lookups skip
            ``__getattr__``.
        exports: Public name → the module that defines it.
        submodules: Submodule names reachable as attributes (``fast.rows_bn``).

    Example:
        >>> getattr_, dir_ = lazy_attributes("demo", {}, {"sqrt": "math"})
        >>> getattr_("sqrt")(4.0)
        2.0
    """
    submodules = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *namespace.get("__all__", ()), *exports})

    return __getattr__, __dir__
