"""One sweep job: skip a finished run, reject a bad config, resume an interrupted run, record a
failed one.

`run_job` never raises for a run that goes wrong. A config that cannot train (`check_config`,
or missing data) is rejected before anything is built: one line on the console, nothing in the
results store. A run that fails during training is recorded as failed in the store (one line
saying why) and the sweep goes on. A run the store marks finished is skipped; a run with a
checkpoint resumes from it (`ablations.state`). A run that another process is training is
skipped, and not a failure: the trainer holds the run's lock (`ablations.lock`). `fit` is the
story of one run: build, resume, train, record.

How a step computes is `gradprobe.fast`'s plan, chosen by ``trainer.mode`` (``fast``: fused LIF
kernels; ``reference``: the official code's per-timestep loop and reshapes); precision is
``trainer.amp`` alone (`ablations.build.precision`). On CPU both modes run float32, and for the
same weights they fire the same spikes.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ablations import store
from ablations.build import (
    build_model,
    build_parts,
    build_probe,
    build_step,
    build_writer,
    environment,
    pick_device,
)
from ablations.checks import ConfigError, check_config
from ablations.distributed import Dist
from ablations.lock import LOCK_NAME, RunLock
from ablations.loop import NonFiniteLossError, total_epochs, train_epochs
from ablations.rundir import RunRecord
from ablations.state import resume, seed_everything
from gradprobe.data import DataNotFoundError
from gradprobe.labels import variant_label

log = logging.getLogger(__name__)


@contextmanager
def torch_settings(cfg: DictConfig) -> Iterator[None]:
    """Thread count and deterministic kernels for one run (``trainer`` group), restored after it
    so that a process running several jobs, or a test session, keeps its own settings."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        if cfg.cpu_threads:
            torch.set_num_threads(int(cfg.cpu_threads))
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def store_identity(cfg: DictConfig, T: int | None) -> dict:
    """The identity fields of the store document of a checked config."""
    name = str(cfg.model.name)
    kwargs = cfg.model.get("kwargs") or {}
    # A registered name with its architecture changed by kwargs is recorded as such.
    shown = f"{name}({','.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else name
    epochs = cfg.trainer.epochs
    return {
        "experiment": None if cfg.experiment_name == "default" else str(cfg.experiment_name),
        "model": shown,
        "family": name.split("_")[0],
        "downsample": str(cfg.downsample.name),
        "downsample_label": variant_label(str(cfg.downsample.name)),
        "dataset": str(cfg.dataset.name),
        "seed": int(cfg.seed),
        "T": T if T is not None else cfg.model.T,
        "loss": str(cfg.loss.name),
        "epochs_planned": int(epochs) + int(cfg.trainer.cooldown_epochs or 0)
        if isinstance(epochs, int)
        else epochs,
        "params": None,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


#: Errors that reject a config before training: nothing is recorded for such a run.
REJECTED = (ConfigError, DataNotFoundError)
#: Why this process rejected each run id (the command's summary names them: `ablations.train`).
REJECTIONS: dict[str, str] = {}


def reject(run_dir: Path, err: Exception) -> str:
    """A run whose config cannot train: one line on the console and nothing in the results store.

    The folder Hydra made for the job (its ``.hydra`` and log) is removed when it holds nothing
    else, and so is the sweep folder above it when that is then empty, so a rejected config
    leaves no trace; an earlier attempt's files are left alone.
    """
    log.error("%s rejected before training: %s", run_dir.name, err)
    REJECTIONS[run_dir.name] = str(err)
    try:
        names = os.listdir(run_dir)
    except OSError:
        return "rejected"
    if all(name == ".hydra" or name.endswith(".log") for name in names):
        shutil.rmtree(run_dir, ignore_errors=True)
        with suppress(OSError):  # the sweep folder Hydra made for it, if nothing else is there
            run_dir.parent.rmdir()
    return "rejected"


def run_job(cfg: DictConfig, run_dir: Path, sweep_dir: Path, job_num: int = 0) -> str:
    """Train (or skip, or resume) one run and record it; returns its final status.

    Args:
        cfg: The composed config of the job.
        run_dir: The job's directory (its name is the run id).
        sweep_dir: The sweep directory holding ``results/``.
        job_num: The job's number in the sweep (GPU choice with ``trainer.gpu_by_job_num``).

    Returns:
        ``"finished"`` (now or before), ``"failed"`` (recorded in the store), ``"rejected"``
        (a config error found before training: see `reject`) or ``"skipped"`` (another process
        holds the run's lock: nothing is written).
    """
    try:
        dist = Dist.from_config(cfg.trainer)
    except ConfigError as err:
        return reject(run_dir, err)
    if not dist.is_main:
        log.setLevel(logging.WARNING)  # one voice per run: rank 0 reports progress
    lock: RunLock | None = None
    try:
        # every rank decides as rank 0 does
        previous = dist.broadcast(store.read_run(sweep_dir, run_dir.name))
        if previous and previous["status"] == "finished" and not cfg.trainer.rerun_finished:
            final = previous.get("final") or {}
            log.info(
                "%s: finished before (test top-1 %s), skipped",
                run_dir.name,
                final.get("test_top1"),
            )
            return "finished"
        T = check_config(cfg)
        record = RunRecord(run_dir, sweep_dir, store_identity(cfg, T), writes=dist.is_main)
        lock = RunLock(run_dir / LOCK_NAME, lease_s=cfg.trainer.lock_lease_s)
        if skip := claim(lock, record, cfg.trainer, dist):
            return skip
        dist.watch(lambda first, lock=lock: (record.fail(first), lock.release()))
        return train_and_record(cfg, record, dist, job_num, T)
    except REJECTED as err:
        if lock is not None:  # so that `reject` finds the folder as Hydra made it
            lock.release()
        return reject(run_dir, err)
    finally:
        if lock is not None:
            lock.release()
        dist.close()


def train_and_record(cfg: DictConfig, record: RunRecord, dist: Dist, job_num: int, T: int) -> str:
    """`fit` one checked run; a failure during training is recorded as failed in the store.

    Raises:
        ConfigError, DataNotFoundError: From building the run, before anything is written.
    """
    try:
        with torch_settings(cfg.trainer):
            fit(cfg, record, pick_device(cfg.trainer, job_num, dist), dist, T)
        return "finished"
    except REJECTED:
        raise
    except NonFiniteLossError as err:
        log.error("%s failed: %s", record.run_id, err)
        record_failure(record, dist, str(err))
    except Exception as err:
        log.exception("%s failed", record.run_id)
        record_failure(record, dist, f"{type(err).__name__}: {err}")
    return "failed"


def claim(lock: RunLock, record: RunRecord, tcfg: DictConfig, dist: Dist) -> str | None:
    """Take the run's lock (rank 0, for every rank); the status to return instead of training.

    ``None``: this process trains the run. ``skipped``: another process holds the lock (nothing
    is written). ``finished``: the lock's last holder finished the run while we looked.
    """
    skip = None
    if dist.is_main:
        holder = lock.acquire()
        previous = record.previous() if holder is None else None
        if holder is not None:
            log.info("%s: skipped, being trained by %s", record.run_id, holder.describe())
            skip = "skipped"
        elif previous and previous["status"] == "finished" and not tcfg.rerun_finished:
            log.info("%s: finished meanwhile by another process, skipped", record.run_id)
            skip = "finished"
    return dist.broadcast(skip)


def record_failure(record: RunRecord, dist: Dist, message: str) -> None:
    """Record the run failed, once: under DDP with the first error of any rank (`Dist.fail`)."""
    first = dist.fail(message)
    if first is not None:
        record.writes = True  # rank 0, or another rank when rank 0 could not record it
        record.fail(first)


def fit(cfg: DictConfig, record: RunRecord, device: torch.device, dist: Dist, T: int) -> None:
    """Build everything, resume if a checkpoint exists, and train to the planned epoch count.

    A config error or missing data can only surface while building, before `RunRecord.start`
    writes the first file (`train_and_record` relies on it).
    """
    seed_everything(int(cfg.seed))
    backbone, plan = build_model(cfg, device)
    record.doc["params"] = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    parts = build_parts(cfg, backbone, plan, dist, T)
    progress = resume(record.load_checkpoint(), parts)
    if progress.epoch:
        total = total_epochs(cfg.trainer)
        log.info("%s: resuming after epoch %d of %d", record.run_id, progress.epoch, total)
    env = environment(parts)
    record.start(OmegaConf.to_yaml(cfg, resolve=True), str(device), env)
    record.update(progress.history, progress.probe_rows)
    log.info(
        "%s: %s (%s, %d params, T=%d) on %s, %d train / %d test images, %s",
        record.run_id,
        cfg.model.name,
        cfg.downsample.name,
        record.doc["params"],
        T,
        cfg.dataset.name,
        parts.data.train_size,
        parts.data.test_size,
        device,
    )
    log.info("%s: step %s", record.run_id, ", ".join(f"{k}={v}" for k, v in env.items()))
    with ExitStack() as cleanup:
        probe = build_probe(cfg, parts, dist, progress.epoch)
        if probe is not None:
            cleanup.callback(probe.remove)
        writer = build_writer(cfg, record, dist)
        if writer is not None:
            cleanup.callback(writer.close)
        step = build_step(cfg, parts, probe)
        train_epochs(cfg.trainer, parts, step, progress, record, dist, writer)
    final = progress.final()
    record.finish(final)
    log.info(
        "%s: finished, test top-1 %.2f (best %.2f)",
        record.run_id,
        final["test_top1"] if final["test_top1"] is not None else math.nan,
        final["best_test_top1"] or math.nan,
    )
