"""How a build's files reach the output folder: rendered first, then written under a marker.

A build never writes while it computes. Every table, figure and summary is rendered into
memory (a `Staged` set of files; a report is a few megabytes at most), and only then written
by `Staged.commit`:

1. ``INCOMPLETE`` is written into the output folder, naming the build, when it started and
   every file it is about to write;
2. each file is written through `ablations.store.write_atomic` (a temporary file beside it,
   ``fsync``, ``os.replace``), so no file is ever seen truncated;
3. ``INCOMPLETE`` is removed.

So a build killed at any moment leaves either the previous report untouched (killed while
rendering) or a folder that carries ``INCOMPLETE`` (killed while writing), whose files are each
complete, from this build or from an earlier one. The next complete build removes the marker
and any temporary file a killed write left behind. Files of the folder that the build does not
write (an earlier build's table that no run fills any more, a user's notes) are left alone.
"""

from __future__ import annotations

import glob
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path

from ablations.store import write_atomic

#: The file that marks an output folder whose build did not finish.
MARKER = "INCOMPLETE"


def check_out(out: str | os.PathLike) -> Path:
    """The output folder, if it is or can become a writable folder.

    Raises:
        NotADirectoryError: If ``out`` or a folder above it is a file.
        PermissionError: If the folder (or the nearest existing one above it) is not writable.
    """
    if not str(out):
        raise NotADirectoryError("output folder '': an empty path (expected a folder)")
    out = Path(out)
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out else f"is inside {existing}, which is a file"
        raise NotADirectoryError(
            f"output folder {str(out)!r} {where} (expected a folder; it is created if missing)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {str(out)!r}: {existing} is not writable")
    return out


class Staged:
    """The files of one build, held in memory until `commit` writes them all.

    Args:
        out: The output folder the files are meant for (created by `commit`).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     staged = Staged(Path(tmp) / "report")
        ...     path = staged.add("notes.md", "# notes\\n")
        ...     [p.name for p in staged.commit("an example")]
        ['notes.md']
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self._files: dict[str, bytes] = {}
        self._started = _now()

    def add(self, name: str, data: str | bytes) -> Path:
        """Stage ``data`` (text is UTF-8) as ``out/name``; returns that path."""
        self._files[name] = data.encode() if isinstance(data, str) else data
        return self.out / name

    def commit(self, build: str) -> tuple[Path, ...]:
        """Write every staged file under the ``INCOMPLETE`` marker (see the module docstring).

        Args:
            build: What is building, for the marker (e.g. the command line).

        Returns:
            The files written, in the order they were staged.
        """
        names = list(self._files)
        marker = "\n".join([
            "This report folder is incomplete: a build was writing it and did not finish.",
            f"build: {build}",
            f"started: {self._started}, writing since {_now()} (pid {os.getpid()} on "
            f"{socket.gethostname()})",
            "Files it was writing, in this order; each one is complete, from that build or left",
            "from an earlier one (a file older than this marker was not rewritten):",
            *(f"  {name}" for name in names),
            "Rerun the build to complete the folder; a complete build removes this file.",
            "",
        ])  # fmt: skip
        self.out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(self.out, MARKER)
        write_atomic(self.out / MARKER, marker)
        for name in names:
            _remove_stale_temporaries(self.out, name)
            write_atomic(self.out / name, self._files[name])
        (self.out / MARKER).unlink()
        return tuple(self.out / name for name in names)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _remove_stale_temporaries(out: Path, name: str) -> None:
    """Remove what a killed `write_atomic` of ``out/name`` left: ``.<name>.<12 hex>.tmp``."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.tmp")
    for path in out.glob(f".{glob.escape(name)}.*.tmp"):
        if pattern.fullmatch(path.name):
            path.unlink(missing_ok=True)


def emit(out: Path | Staged, name: str, data: str | bytes) -> Path:
    """Stage ``name`` in a build, or write it at once (atomically) into a plain folder."""
    if isinstance(out, Staged):
        return out.add(name, data)
    path = Path(out) / name
    write_atomic(path, data)
    return path
