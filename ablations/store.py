"""The sweep-level results store: one JSON document per run, and the one atomic file writer.

This module is plain Python (no Hydra, no torch) so that `reports` can read stores without the
training stack. Layout::

    <sweep dir>/results/<run_id>.json

Each run owns exactly one file, so parallel jobs never write the same file, and every write goes
through `write_atomic`, so a crash or kill leaves either the previous or the new version, never
a torn one. The document (schema ``gradprobe.run/1``)::

    {
      "schema": "gradprobe.run/1",
      "run_id": str,             # derived from the overrides; also the run directory's name
      "status": "running" | "finished" | "failed",
      "error": str | null,       # one line, for failed runs
      "invocation": str | null,  # the command that last wrote it (`ablations.callbacks`)
      "experiment": str | null,
      "model": str, "family": str, "downsample": str, "downsample_label": str, "dataset": str,
      "seed": int, "T": int, "loss": str, "epochs_planned": int,
      "params": int,
      "run_dir": str,            # relative to the sweep dir
      "config": {...},           # the resolved Hydra config
      "versions": {"torch": ..., "spikingjelly": ..., "gradprobe": ..., "python": ...},
      "git_sha": str | null,
      "device": str,
      "history": [               # one row per finished epoch
        {"epoch": int, "train_loss": float, "train_top1": float, "test_loss": float,
         "test_top1": float, "test_top5": float, "lr": float, "epoch_time_s": float,
         "images_per_s": float}
      ],
      "probe": [                 # probe snapshots (gradprobe.probe tidy rows), may be empty
        {"epoch": int, "step": int, "site": str, "t": int, "precision": float,
         "mass_at_argmax": float, "tie_rate": float, "spike_rate": float, "windows": int}
      ],
      "final": {"test_top1": float, "best_test_top1": float, "test_top5": float,
                "test_loss": float, "epochs_done": int, "wall_time_s": float} | null
    }

Accuracies are percentages (0-100), losses are per-sample means.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA = "gradprobe.run/1"
STATUSES = ("running", "finished", "failed")
RESULTS_DIRNAME = "results"
#: The environment variable holding the id of the command that launched the jobs; every run
#: document a job writes carries it as ``invocation`` (set by `ablations.callbacks.ExitStatus`).
INVOCATION_ENV = "GRADPROBE_INVOCATION"


def store_dir(root: str | os.PathLike) -> Path:
    """The results folder of a sweep dir. A folder named ``results``, or one that holds run
    documents and no ``results`` folder, is taken to be the store itself."""
    root = Path(root)
    if root.name == RESULTS_DIRNAME:
        return root
    if not (root / RESULTS_DIRNAME).exists() and any(root.glob("*.json")):
        return root
    return root / RESULTS_DIRNAME


def write_atomic(path: str | os.PathLike, data: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` so that readers see the old or the new file, never a partial one.

    The one rule of every file the harness writes: the content goes to a temporary file beside
    ``path``, is flushed to disk (``fsync``), and is renamed over ``path``. A crash at any
    moment therefore leaves the previous or the new version, complete. The file gets the
    permissions a plain ``open`` would give (``0o666`` less the process's umask).

    Args:
        path: The file to write; its folder is created when missing.
        data: Text (UTF-8), bytes, or a function that writes into the open binary file (e.g.
            ``lambda fh: torch.save(state, fh)``).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_atomic(Path(tmp) / "a.txt", "hello")
        ...     (Path(tmp) / "a.txt").read_text()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: a fresh file of our own; the mode 0o666 passes through the umask like open()'s.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, doc: Any) -> None:
    """Write ``doc`` as indented JSON with sorted keys through `write_atomic`."""
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True, allow_nan=True))


def write_run(root: str | os.PathLike, doc: dict) -> Path:
    """Validate and atomically write one run document into the store under ``root``."""
    validate(doc)
    path = store_dir(root) / f"{doc['run_id']}.json"
    write_json_atomic(path, doc)
    return path


def validate(doc: dict) -> None:
    """Raise ``ValueError`` naming the first problem with a run document."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document")
    for key in ("run_id", "status", "model", "downsample", "dataset", "seed", "history"):
        if key not in doc:
            raise ValueError(f"run document lacks {key!r}")
    if doc["status"] not in STATUSES:
        raise ValueError(f"unknown run status {doc['status']!r}; choices: {', '.join(STATUSES)}")


def iter_runs(root: str | os.PathLike) -> Iterator[dict]:
    """Yield every readable run document of a store, sorted by run id.

    A corrupt, partial or foreign file is skipped with a warning naming it.
    """
    for path in sorted(store_dir(root).glob("*.json")):
        try:
            with open(path) as fh:
                doc = json.load(fh)
            validate(doc)
        except (OSError, ValueError) as err:
            warnings.warn(f"skipping results file {path}: {err}", stacklevel=2)
            continue
        yield doc


def read_run(root: str | os.PathLike, run_id: str) -> dict | None:
    """The document of one run, or ``None`` if the store has none (or an unreadable one)."""
    path = store_dir(root) / f"{run_id}.json"
    try:
        with open(path) as fh:
            doc = json.load(fh)
        validate(doc)
    except (OSError, ValueError):
        return None
    return doc
