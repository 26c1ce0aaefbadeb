"""One-line errors for a command whose optional dependencies are not installed.

The library installs alone (``pip install .``); the harness and the reports are extras
(``pyproject.toml``). A command that needs one says which, before it imports
anything that would fail with a traceback.
"""

from __future__ import annotations

import importlib.util
import sys


def missing(*modules: str) -> list[str]:
    """The names among ``modules`` that cannot be imported here.

    Example:
        >>> missing("json", "no_such_module_here")
        ['no_such_module_here']
    """
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require(extra: str, *modules: str, command: str) -> None:
    """Exit with one line naming the extra to install unless every one of ``modules`` imports.

    Args:
        extra: The ``pyproject.toml`` extra that brings them (``"harness"``, ``"reports"``).
        *modules: Top-level module names the command imports.
        command: The command, for the message (``"python -m ablations.train"``).
    """
    absent = missing(*modules)
    if absent:
        sys.exit(
            f"{command} needs {', '.join(absent)} (not installed): pip install 'gradprobe[{extra}]'"
        )
