"""Hydra callbacks of the app (configured in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ablations import preflight, store


def new_invocation() -> str:
    """A fresh id for one command: its start time (readable) and a random suffix (unique)."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"


class ExitStatus(Callback):
    """Checks the jobs before any is launched, and counts the runs this invocation rejected or
    that failed, so that `main` can exit non-zero naming them.

    Before any job launches, `ablations.preflight.check_jobs` composes and checks every job: a
    command whose jobs are all rejected stops there with status 1 (nothing written);
    otherwise the rejected runs are printed now, kept in ``rejected`` and named again at the end
    (the jobs reject them again and record nothing). A job that its own process rejects adds
    itself too (``train``; in this process only: under the basic launcher every job, under
    joblib or Slurm only those the preflight saw).

    The command also puts a fresh invocation id in the environment
    (`ablations.store.INVOCATION_ENV`). Every job inherits it wherever it runs: in this process
    (basic launcher), in joblib's worker processes, in Slurm jobs (sbatch exports the submitting
    environment). Each job stamps its run document with it (``invocation``), so the failures of
    this command are the failed documents that carry its id. A run that failed in an earlier
    command and is not retried keeps that command's id and does not count.
    """

    failed: list[str] = []  # noqa: RUF012 - shared with main() in this process
    rejected: dict[str, str] = {}  # noqa: RUF012 - run id -> why, shared with train() and main()
    skipped: list[str] = []  # noqa: RUF012 - runs another process was training (not a failure)
    invocation: str | None = None

    @staticmethod
    def _start() -> None:
        ExitStatus.invocation = new_invocation()
        os.environ[store.INVOCATION_ENV] = ExitStatus.invocation

    @staticmethod
    def _check(config: DictConfig, multirun: bool) -> None:
        try:
            rejected = preflight.check_jobs(config, multirun)
        except preflight.NothingToRun as err:
            # Hydra turns a callback's exception into a warning and goes on: leave as Hydra
            # does after its own errors, before it creates a folder
            print(*(f"error: {line}" for line in err.lines), sep="\n", file=sys.stderr)
            raise SystemExit(1) from None
        for run_id, why in rejected.items():
            print(f"{run_id} rejected before training: {why}", file=sys.stderr)
        ExitStatus.rejected.update(rejected)

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        self._start()
        self._check(config, multirun=False)

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        self._start()
        self._check(config, multirun=True)

    def _collect(self, sweep_dir: Path) -> None:
        for path in sorted(store.store_dir(sweep_dir).glob("*.json")):
            doc = store.read_run(sweep_dir, path.stem)  # None: unreadable, not this command's
            if doc and doc.get("invocation") == ExitStatus.invocation and doc["status"] == "failed":
                ExitStatus.failed.append(f"{doc['run_id']}: {doc['error']}")

    def on_run_end(self, config: DictConfig, **kwargs: object) -> None:
        self._collect(Path(config.hydra.run.dir).parent)

    def on_multirun_end(self, config: DictConfig, **kwargs: object) -> None:
        self._collect(Path(config.hydra.sweep.dir))

    @staticmethod
    def summary() -> list[str]:
        """The lines `main` prints at the end (failures first: the last line names a value)."""
        lines = []
        if ExitStatus.failed:
            lines += [f"{len(ExitStatus.failed)} run(s) failed:"]
            lines += [f"  {line}" for line in ExitStatus.failed]
        if ExitStatus.rejected:
            lines += [f"{len(ExitStatus.rejected)} run(s) rejected before training (not recorded):"]
            lines += [f"  {run_id}: {why}" for run_id, why in ExitStatus.rejected.items()]
        return lines

    @staticmethod
    def notes() -> list[str]:
        """Lines `main` prints at the end that do not make the command fail."""
        if not ExitStatus.skipped:
            return []
        head = f"{len(ExitStatus.skipped)} run(s) skipped: another process was training them"
        return [head, *(f"  {run_id}" for run_id in ExitStatus.skipped)]
