"""Hydra callbacks of the app (configured in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ablations import store


def new_invocation() -> str:
    """A fresh id for one command: its start time (readable) and a random suffix (unique)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"


class ExitStatus(Callback):
    """Counts the runs that failed in this invocation, so that `main` can exit non-zero.

    Before any job launches, the command puts a fresh invocation id in the environment
    (`ablations.store.INVOCATION_ENV`). Every job inherits it wherever it runs: in this process
    (basic launcher), in joblib's worker processes, in Slurm jobs (sbatch exports the submitting
    environment). Each job stamps its run document with it (``invocation``), so the failures of
    this command are the failed documents that carry its id. A run that failed in an earlier
    command and is not retried keeps that command's id and does not count.
    """

    failed: list[str] = []  # noqa: RUF012 - shared with main() in this process
    invocation: str | None = None

    @staticmethod
    def _start() -> None:
        ExitStatus.invocation = new_invocation()
        os.environ[store.INVOCATION_ENV] = ExitStatus.invocation

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        self._start()

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        self._start()

    def _collect(self, sweep_dir: Path) -> None:
        for path in sorted(store.store_dir(sweep_dir).glob("*.json")):
            doc = store.read_run(sweep_dir, path.stem)  # None: unreadable, not this command's
            if doc and doc.get("invocation") == ExitStatus.invocation and doc["status"] == "failed":
                ExitStatus.failed.append(f"{doc['run_id']}: {doc['error']}")

    def on_run_end(self, config: DictConfig, **kwargs: object) -> None:
        self._collect(Path(config.hydra.run.dir).parent)

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        self._collect(Path(config.hydra.sweep.dir))
