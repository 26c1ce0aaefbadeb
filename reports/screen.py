"""Which documents of a store a report reads: the unreadable ones, and the rejected configs.

Two kinds of file never become rows of a report:

* **Unreadable** files (corrupt or partial JSON, a foreign document, a field of the wrong type,
  a file the process may not read). A build stops on them (`BadResultsError`, one line per
  file) unless asked to skip them (``--skip-bad``); a skipped file is listed in the coverage
  summary with the cell its run belonged to, inferred from readable runs of the same store
  whose run id differs only in ``seed=``.
* **Rejected configs**: documents of runs that a config error stopped before the model was
  built (``status == "failed"``, no history, no parameter count). Older versions of the harness
  wrote one for every rejected config; they are configuration mistakes, not results, so they
  are ignored and counted in the coverage summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: The prefix of the warning `ablations.store.iter_runs` gives for a file it cannot read.
_UNREADABLE = "skipping results file "
_CELL_FIELDS = ("dataset", "model", "T", "epochs", "variant")


@dataclass(frozen=True)
class SkippedFile:
    """A results file left out of a report.

    Attributes:
        path: The file.
        name: Its name relative to its store, with the store's run-id prefix (several stores).
        reason: Why it could not be read, one line.
        cell: The cell its run belonged to (``dataset=..., model=..., ...``), or ``""`` when no
            readable run of the store tells.
    """

    path: Path
    name: str
    reason: str
    cell: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


class BadResultsError(ValueError):
    """Results files that cannot be read; the build stops unless told to skip them."""

    def __init__(self, skipped: Sequence[SkippedFile]) -> None:
        self.skipped = tuple(skipped)
        super().__init__("\n".join(_unreadable_line(s) for s in self.skipped))


def _unreadable_line(skipped: SkippedFile) -> str:
    return (
        f"unreadable results file {skipped.path}: {skipped.reason} (--skip-bad builds without it)"
    )


def is_rejected(doc: dict) -> bool:
    """Whether a run document records a config rejected before training: failed, with no
    history and no parameter count (the model was never built)."""
    return doc["status"] == "failed" and not doc["history"] and doc.get("params") is None


def shape_problem(doc: dict) -> str:
    """What makes a valid-looking run document unusable (a field of the wrong type), or ``""``."""
    for key in ("history", "probe"):
        rows = doc.get(key) or []
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return f"{key!r} is not a list of objects"
    if not isinstance(doc.get("final") or {}, dict):
        return "'final' is not an object"
    for key in ("model", "downsample", "dataset"):
        if not isinstance(doc[key], str):
            return f"{key!r} is {doc[key]!r}, not a string"
    for key in ("seed", "T", "epochs_planned", "params"):
        value = doc.get(key, 0 if key == "seed" else None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{key!r} is {value!r}, not an integer"
    return ""


def unreadable(message: str, store: Path, label: str) -> SkippedFile | None:
    """The file named by an `ablations.store.iter_runs` warning, or ``None`` for another one."""
    if not message.startswith(_UNREADABLE):
        return None
    where, _, reason = message.removeprefix(_UNREADABLE).partition(": ")
    for path in store.glob("*.json"):  # a path may itself hold ": "; match the real ones
        if message.startswith(f"{_UNREADABLE}{path}: "):
            where, reason = str(path), message.removeprefix(f"{_UNREADABLE}{path}: ")
            break
    path = Path(where)
    return SkippedFile(path, label + path.name, " ".join(reason.split()))


def with_cells(skipped: list[SkippedFile], records: list[dict], label: str) -> list[SkippedFile]:
    """Name the cell of each skipped file from the store's readable runs (``records``, run ids
    prefixed with ``label``) whose run id differs from the file's name only in ``seed=``."""
    cells = {}
    for record in records:
        run_id = record["run_id"].removeprefix(label)
        key = _without_seed(run_id)
        cell = ", ".join(f"{field}={record[field]}" for field in _CELL_FIELDS)
        cells.setdefault(key, cell)
    return [
        SkippedFile(s.path, s.name, s.reason, cells.get(_without_seed(s.path.stem), ""))
        for s in skipped
    ]


def _without_seed(run_id: str) -> tuple[str, ...]:
    # Run ids are the overrides, ``key=value`` joined by commas (`ablations.configs`).
    return tuple(item for item in run_id.split(",") if not item.startswith("seed="))
