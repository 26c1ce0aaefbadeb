"""`ablations.lock`: one trainer per run; stale locks by pid, lease and Slurm job; one winner."""

import json
import logging
import multiprocessing
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import ablations.configs  # noqa: F401  (registers the model group)
from ablations import run, store
from ablations.checks import ConfigError, check_config
from ablations.lock import LOCK_NAME, Holder, RunLock, read_holder

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from ablations.lock import RunLock
lock = RunLock(sys.argv[1])
assert lock.acquire() is None
print("held", flush=True)
time.sleep(120)
"""


def write_holder(path: Path, holder: Holder, age_s: float = 0.0) -> None:
    """A lock file as `holder` would have left it, its last heartbeat ``age_s`` ago."""
    data = {k: v for k, v in asdict(holder).items() if k != "heartbeat"}
    path.write_text(json.dumps(data))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def elsewhere(**changes) -> Holder:
    """A holder on another host (so only its lease or its Slurm job can free it)."""
    return replace(Holder.me(), **{"host": "node-elsewhere", "pid": 4242, "slurm": None, **changes})


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                           capture_output=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_a_live_holder_blocks_until_it_is_killed(tmp_path):
    path = tmp_path / LOCK_NAME
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], env=env,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"
        holder = RunLock(path).acquire()
        assert holder is not None and holder.pid == child.pid
        assert f"pid {child.pid} since " in holder.describe() and "host " in holder.describe()
    finally:
        child.kill()  # kill -9: no release
        child.wait()
    assert read_holder(path).pid == child.pid  # the lock survived its holder
    lock = RunLock(path)
    assert lock.acquire() is None and read_holder(path).pid == os.getpid()
    lock.release()
    assert not path.exists()


def test_stale_by_dead_or_reused_pid(tmp_path, caplog):
    path = tmp_path / LOCK_NAME
    write_holder(path, replace(Holder.me(), pid=dead_pid()))
    lock = RunLock(path)
    with caplog.at_level(logging.INFO, logger="ablations.lock"):
        assert lock.acquire() is None
    assert "its process is gone" in caplog.text
    lock.release()
    # our own pid, but recorded with another start time: the pid was reused
    write_holder(path, replace(Holder.me(), started="1"))
    assert lock.acquire() is None
    lock.release()
    write_holder(path, Holder.me())  # this very process: alive, whatever the heartbeat
    assert RunLock(path).acquire() is not None


def test_stale_by_lease_on_another_host(tmp_path):
    path = tmp_path / LOCK_NAME
    write_holder(path, elsewhere(), age_s=20)
    assert RunLock(path, lease_s=30).acquire().host == "node-elsewhere"
    write_holder(path, elsewhere(), age_s=40)
    lock = RunLock(path, lease_s=30)
    assert lock.acquire() is None and read_holder(path).pid == os.getpid()
    lock.release()


def test_a_slurm_requeue_takes_over_a_fresh_lock(tmp_path, monkeypatch):
    path = tmp_path / LOCK_NAME
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "124")
    write_holder(path, elsewhere(slurm="123"))
    assert RunLock(path).acquire() is not None  # another job, fresh heartbeat: alive
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    lock = RunLock(path)
    assert lock.acquire() is None and read_holder(path).slurm == "123"
    lock.release()
    # an array task is its array job and task id
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "900")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    write_holder(path, elsewhere(slurm="900_2"))
    assert RunLock(path).acquire() is not None
    write_holder(path, elsewhere(slurm="900_3"))
    assert lock.acquire() is None
    lock.release()


def test_the_heartbeat_keeps_a_lock_fresh(tmp_path):
    lock = RunLock(tmp_path / LOCK_NAME, lease_s=60, heartbeat_s=0.05)
    assert lock.acquire() is None
    os.utime(lock.path, (time.time() - 50, time.time() - 50))
    time.sleep(0.3)
    assert time.time() - lock.path.stat().st_mtime < 5
    lock.release()
    assert not lock.path.exists()


def race(path: str, start, results) -> None:
    start.wait()
    results.put(RunLock(Path(path), lease_s=30).acquire() is None)  # the winner never releases


@pytest.mark.parametrize("stale", ["dead pid", "lease"])
def test_processes_racing_to_take_over_a_stale_lock_make_one_winner(tmp_path, monkeypatch, stale):
    judge = Holder.stale

    def slow_judge(self, lease_s):
        # a pause between judging a holder and acting on it, as on a busy NFS client: renaming
        # the stale lock aside and creating a new one then makes two winners in most rounds
        reason = judge(self, lease_s)
        time.sleep(random.random() * 0.02)
        return reason

    monkeypatch.setattr(Holder, "stale", slow_judge)  # the forked racers inherit it
    ctx = multiprocessing.get_context("fork")
    for attempt in range(4):
        path = tmp_path / f"{attempt}" / LOCK_NAME
        path.parent.mkdir()
        if stale == "lease":
            write_holder(path, elsewhere(), age_s=100)
        else:
            write_holder(path, replace(Holder.me(), pid=dead_pid()))
        start, results = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=race, args=(str(path), start, results)) for _ in range(8)]
        for proc in procs:
            proc.start()
        wins = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
        assert sum(wins) == 1, wins
        assert read_holder(path).pid in {proc.pid for proc in procs}
        assert sorted(p.name for p in path.parent.iterdir()) == [LOCK_NAME]  # no debris


def config(*overrides: str):
    with initialize_config_module("ablations.conf", version_base="1.3"):
        return compose("config", overrides=["debug=tiny", "trainer.epochs=1", *overrides])


def test_a_run_another_process_trains_is_skipped_and_not_recorded(tmp_path, monkeypatch, caplog):
    held = RunLock(tmp_path / "run" / LOCK_NAME)
    assert held.acquire() is None
    monkeypatch.setattr(run, "fit", lambda *a, **k: pytest.fail("a locked run was trained"))
    with caplog.at_level(logging.INFO, logger="ablations.run"):
        assert run.run_job(config(), tmp_path / "run", tmp_path) == "skipped"
    assert (
        f"run: skipped, being trained by host {Holder.me().host} pid {os.getpid()}" in caplog.text
    )
    assert list(store.iter_runs(tmp_path)) == []
    assert read_holder(held.path).token == held.holder.token  # the holder keeps its lock
    held.release()


def test_a_run_finished_while_waiting_for_its_lock_is_skipped(tmp_path, monkeypatch, caplog):
    acquire = RunLock.acquire
    doc = {"schema": store.SCHEMA, "run_id": "run", "status": "finished", "model": "m",
           "downsample": "d", "dataset": "x", "seed": 0, "history": []}  # fmt: skip

    def finished_by_the_last_holder(self):
        store.write_run(tmp_path, doc)
        return acquire(self)

    monkeypatch.setattr(RunLock, "acquire", finished_by_the_last_holder)
    monkeypatch.setattr(run, "fit", lambda *a, **k: pytest.fail("a finished run was trained"))
    with caplog.at_level(logging.INFO, logger="ablations.run"):
        assert run.run_job(config(), tmp_path / "run", tmp_path) == "finished"
    assert "run: finished meanwhile by another process, skipped" in caplog.text
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_the_lock_is_released_on_every_exit(tmp_path, monkeypatch):
    path = tmp_path / "run" / LOCK_NAME
    assert run.run_job(config(), tmp_path / "run", tmp_path) == "finished"
    assert not path.exists()

    def boom(*args, **kwargs):
        assert read_holder(path).pid == os.getpid()  # held while training
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(run, "fit", boom)
    assert (
        run.run_job(config("trainer.rerun_finished=true"), tmp_path / "run", tmp_path) == "failed"
    )
    assert not path.exists()
    monkeypatch.setattr(run, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run.run_job(config("trainer.rerun_finished=true"), tmp_path / "run", tmp_path)
    assert not path.exists()


def test_the_lease_is_checked():
    with pytest.raises(ConfigError, match=r"trainer.lock_lease_s must be a positive number, got 0"):
        check_config(config("trainer.lock_lease_s=0"))
