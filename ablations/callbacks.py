"""Hydra callbacks of the app (configured in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ablations import store


class ExitStatus(Callback):
    """Counts the runs that failed in this invocation, so that `main` can exit non-zero.

    Jobs may run in other processes (joblib, Slurm), so the count comes from the results store:
    documents marked failed that were written since the command started.
    """

    failed: list[str] = []  # noqa: RUF012 - shared with main() in this process
    started = time.time()

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        ExitStatus.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        ExitStatus.started = time.time()

    def _collect(self, sweep_dir: Path) -> None:
        for path in sorted(store.store_dir(sweep_dir).glob("*.json")):
            if path.stat().st_mtime < ExitStatus.started - 1:
                continue
            doc = store.read_run(sweep_dir, path.stem)
            if doc is not None and doc["status"] == "failed":
                ExitStatus.failed.append(f"{doc['run_id']}: {doc['error']}")

    def on_run_end(self, config: DictConfig, **kwargs: object) -> None:
        self._collect(Path(config.hydra.run.dir).parent)

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        self._collect(Path(config.hydra.sweep.dir))
