"""Compare the run documents of two results stores, timings and provenance aside.

Two runs of the same config and seed on the same machine must give the same numbers: the same
history, probe rows and final metrics. This module says whether they do, field by field, so that
a refactor, a rerun from scratch or a resumed sweep can be checked against an earlier one::

    python -m reports diff sweeps_before/quickstart sweeps_after/quickstart

Fields that legitimately differ between two runs of one config are ignored: wall-clock timings,
throughput, the git SHA, package versions, the invocation id and where the sweep was written
(``config.paths``). Everything else, numbers included, must be equal to the bit (JSON floats
round-trip exactly); ``NaN`` equals ``NaN``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations.store import store_dir

#: Keys ignored at any depth: timings and throughput.
VOLATILE_KEYS = frozenset({"epoch_time_s", "images_per_s", "wall_time_s", "train_time_s"})
#: Top-level provenance: which code, packages and command wrote the document.
PROVENANCE_KEYS = frozenset({"git_sha", "versions", "invocation"})
#: Config subtrees that name where files went, not what was computed.
IGNORED_CONFIG = frozenset({"paths"})


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Each difference between two run documents (or parts of them), one line each.

    Example:
        >>> list(differences({"x": [1.0, 2.0], "wall_time_s": 3}, {"x": [1.0, 2.5]}))
        ['x[1]: 2.0 != 2.5']
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key in VOLATILE_KEYS or (not path and key in PROVENANCE_KEYS):
                continue
            if path == "config" and key in IGNORED_CONFIG:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                yield f"{where}: only in {'the first' if key in a else 'the second'}"
            else:
                yield from differences(a[key], b[key], where)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} entries != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from differences(x, y, f"{path}[{i}]")
    elif not _same(a, b):
        yield f"{path}: {a!r} != {b!r}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@dataclass
class StoreDiff:
    """The comparison of two stores: per run id, the differences found (empty: identical)."""

    runs: dict[str, list[str]] = field(default_factory=dict)
    only_first: list[str] = field(default_factory=list)
    only_second: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Whether both stores hold the same run ids with no difference in any of them."""
        return not (self.only_first or self.only_second or any(self.runs.values()))

    def lines(self) -> list[str]:
        """A human-readable summary, one run per line, then each difference indented."""
        out = []
        for run_id, found in self.runs.items():
            out.append(f"{run_id}: {'identical' if not found else f'{len(found)} differences'}")
            out += [f"    {line}" for line in found]
        out += [f"{run_id}: only in the first store" for run_id in self.only_first]
        out += [f"{run_id}: only in the second store" for run_id in self.only_second]
        same = sum(not found for found in self.runs.values())
        out.append(f"{same} of {len(self.runs)} common runs identical")
        return out


def _documents(root: str | os.PathLike) -> dict[str, dict]:
    folder = store_dir(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"no results store at {root} (looked for {folder})")
    docs = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            docs[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: unreadable run document ({error})") from None
    return docs


def diff_stores(first: str | os.PathLike, second: str | os.PathLike) -> StoreDiff:
    """Compare every run document of two stores (sweep folders or ``results/`` folders).

    Example:
        >>> result = diff_stores("sweeps/quickstart", "/tmp/rerun/quickstart")  # doctest: +SKIP
        >>> result.identical  # doctest: +SKIP
        True
    """
    a, b = _documents(first), _documents(second)
    result = StoreDiff(
        only_first=sorted(set(a) - set(b)),
        only_second=sorted(set(b) - set(a)),
    )
    for run_id in sorted(set(a) & set(b)):
        result.runs[run_id] = list(differences(a[run_id], b[run_id]))
    return result
