"""What one run leaves on disk, and the run's document in the sweep's results store.

A run directory ``<sweep dir>/<run_id>/`` holds::

    config.yaml          the resolved config
    environment.json     library versions, git SHA, device, host, trainer.mode and LIF kernel,
                         the CPU and what decides its numerics (`gradprobe.portable.describe`)
    metrics.csv          one row per finished epoch (the store document's ``history``)
    probe.csv            gradient-landing snapshots (``probe=landing``)
    summary.json         final numbers, once the run finished
    checkpoints/last.pt  everything needed to resume, rewritten atomically after every epoch
    train.log            Hydra's log of the job
    trainer.lock         who trains the run now (`ablations.lock`), while it trains

and ``<sweep dir>/results/<run_id>.json`` (`ablations.store`) is rewritten after every epoch.
Every file is written through `ablations.store.write_atomic`, so a kill leaves the old or the
new version. Only the process that `RunRecord.writes` touches any of it (rank 0 under DDP).
"""

from __future__ import annotations

import csv
import io
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ablations import store
from gradprobe import portable

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_top1",
    "test_loss",
    "test_top1",
    "test_top5",
    "lr",
    "epoch_time_s",
    "images_per_s",
)
PACKAGES = ("torch", "torchvision", "spikingjelly", "timm", "hydra-core", "numpy", "gradprobe")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape the numbers, plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    """The commit of the checkout this code runs from (``None`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def rows_to_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class RunRecord:
    """The files of one run and its results-store document.

    Args:
        run_dir: The run directory (its name is the run id).
        sweep_dir: The sweep directory that holds the results store.
        doc: Identity fields of the store document (model, downsample, dataset, seed, ...).
        writes: Whether this process writes (``False`` on DDP ranks other than 0).
    """

    def __init__(
        self, run_dir: Path, sweep_dir: Path, doc: dict[str, Any], writes: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.sweep_dir = Path(sweep_dir)
        self.run_id = self.run_dir.name
        self.writes = writes
        self.checkpoint_path = self.run_dir / "checkpoints" / "last.pt"
        self.doc: dict[str, Any] = {
            "schema": store.SCHEMA,
            "run_id": self.run_id,
            "status": "running",
            "error": None,
            "invocation": os.environ.get(store.INVOCATION_ENV),
            "run_dir": os.path.relpath(self.run_dir, self.sweep_dir),
            "history": [],
            "probe": [],
            "final": None,
            **doc,
        }

    def previous(self) -> dict | None:
        """The store's document of this run from an earlier attempt, if any."""
        return store.read_run(self.sweep_dir, self.run_id)

    def start(self, config_yaml: str, device: str, step: dict[str, str] | None = None) -> None:
        """Write the resolved config and the environment; mark the run running.

        Args:
            config_yaml: The resolved config.
            device: Where the run trains.
            step: How a step computes, for environment.json (`ablations.build.environment`).
        """
        self.doc.update(versions=library_versions(), git_sha=git_sha(), device=device)
        if not self.writes:
            return
        store.write_atomic(self.run_dir / "config.yaml", config_yaml)
        env = {
            "versions": self.doc["versions"],
            "git_sha": self.doc["git_sha"],
            "device": device,
            **(step or {}),
            "host": socket.gethostname(),
            "argv": sys.argv,
            "cuda_devices": torch.cuda.device_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_numerics": portable.describe(),
        }
        store.write_json_atomic(self.run_dir / "environment.json", env)
        self._write_doc()

    def update(self, history: list[dict], probe_rows: list[dict]) -> None:
        """Record the epochs finished so far (metrics.csv, probe.csv and the store)."""
        self.doc["history"], self.doc["probe"] = list(history), list(probe_rows)
        if not self.writes:
            return
        store.write_atomic(self.run_dir / "metrics.csv", rows_to_csv(history, HISTORY_COLUMNS))
        if probe_rows:
            store.write_atomic(
                self.run_dir / "probe.csv", rows_to_csv(probe_rows, list(probe_rows[0]))
            )
        self._write_doc()

    def finish(self, final: dict) -> None:
        """Mark the run finished with its final numbers and write summary.json."""
        self.doc.update(status="finished", error=None, final=final)
        if self.writes:
            store.write_json_atomic(self.run_dir / "summary.json", {"run_id": self.run_id, **final})
            self._write_doc()

    def fail(self, message: str) -> None:
        """Mark the run failed with a one-line reason; its files stay for inspection."""
        self.doc.update(status="failed", error=" ".join(str(message).split()))
        if self.writes:
            self._write_doc()

    def save_checkpoint(self, state: dict) -> None:
        """Atomically replace ``checkpoints/last.pt``."""
        if not self.writes:
            return
        store.write_atomic(self.checkpoint_path, lambda fh: torch.save(state, fh))

    def load_checkpoint(self) -> dict | None:
        """The last checkpoint (our own file, so unpickling it is safe), or ``None``."""
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)

    def _write_doc(self) -> None:
        store.write_run(self.sweep_dir, self.doc)
