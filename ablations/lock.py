"""One run, one trainer: a lock file in the run directory that survives ``kill -9``.

The process that trains a run holds ``<run dir>/trainer.lock``, a JSON file naming it (host, pid
and the pid's start time, boot id, pid namespace, Slurm job, since when, a random token). The
file's modification time is its heartbeat, touched every ``lease / 10`` s by a thread. Another
process reaching the run skips it while the holder lives and takes the lock over once it is
stale: on this host (same boot and pid namespace) when its pid is gone or reused (another start
time), never while it runs; after a reboot of this host; when it recorded this process's Slurm
job (``SLURM_JOB_ID``, or array job and task: a requeue, whose old process Slurm has ended, even
with a fresh heartbeat); otherwise (another host) when its heartbeat is older than the lease
(``trainer.lock_lease_s``, 300 s: how long a crashed holder elsewhere keeps others off its run;
it must exceed the heartbeat interval plus the hosts' clock skew by a wide margin).

Why plain files: ``fcntl`` locks on NFS hang on a lock daemon and vanish when it restarts, need
``-o flock`` on Lustre, and cannot say who holds them; name operations are atomic on every shared
filesystem. The lock is made by ``os.link`` of a complete temporary file, exclusive even where
NFS's ``O_EXCL`` is not (the link count settles a lost reply), so no reader sees half a holder. A
stale lock is never removed and recreated, nor renamed aside: a second process that judged the
same holder stale would then move the new lock away (two winners). Only the process that creates
``trainer.lock.break-<stale token>`` may replace that holder, after re-reading it, by
``os.replace``; the name exists all along, so no plain acquirer slips in. Every change of an
existing lock, a release included, happens under its break file: never two winners. A process
killed while it holds a break file is a stale holder of that file, broken one level down.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
LOCK_NAME = "trainer.lock"
DEFAULT_LEASE_S = 300.0


def _proc(path: str, link: bool = False) -> str | None:
    """A ``/proc`` entry's text (or a link's target); ``None`` where there is none."""
    try:
        return os.readlink(path) if link else Path(path).read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (Linux): tells a reused pid."""
    stat = _proc(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split()[19] if stat else None  # field 22, after "(comm)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's process
    except (OSError, OverflowError):
        return False
    return pid > 0


def slurm_job() -> str | None:
    """This process's Slurm job, ``<array job>_<task>`` for array tasks; ``None`` outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock; ``heartbeat`` is the lock file's modification time when read."""

    host: str
    pid: int
    started: str | None
    boot: str | None
    pidns: str | None
    slurm: str | None
    since: float
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    heartbeat: float = 0.0

    @classmethod
    def me(cls) -> Holder:
        pid, ns = os.getpid(), _proc("/proc/self/ns/pid", link=True)
        boot = _proc("/proc/sys/kernel/random/boot_id")
        return cls(socket.gethostname(), pid, _start_time(pid), boot, ns, slurm_job(), time.time())

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        job = f", Slurm job {self.slurm}" if self.slurm else ""
        beat = f"heartbeat {max(time.time() - self.heartbeat, 0):.0f} s ago{job}"
        return f"host {self.host} pid {self.pid} since {since} ({beat})"

    def stale(self, lease_s: float) -> str | None:
        """Why this holder no longer holds its lock, or ``None`` while it does."""
        me = Holder.me()
        if (self.host, self.boot, self.pidns) == (me.host, me.boot, me.pidns):
            if not _alive(self.pid):
                return "its process is gone"
            if self.started is not None and _start_time(self.pid) != self.started:
                return "its pid belongs to another process now"
            return None
        if self.host == me.host and None not in (self.boot, me.boot) and self.boot != me.boot:
            return "its host rebooted"
        if self.slurm is not None and self.slurm == me.slurm:
            return f"this is a requeue of its Slurm job {self.slurm}"
        age = time.time() - self.heartbeat
        return f"no heartbeat for {age:.0f} s (lease {lease_s:.0f} s)" if age > lease_s else None


def _write_temp(path: Path, holder: Holder) -> Path:
    tmp = path.with_name(f".{path.name}.{holder.token}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "x") as fh:
        json.dump({k: v for k, v in asdict(holder).items() if k != "heartbeat"}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def _create(path: Path, holder: Holder) -> bool:
    """Create ``path`` naming ``holder`` unless it exists; whether this call created it."""
    tmp = _write_temp(path, holder)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        if os.stat(tmp).st_nlink == 2:  # NFS: linked, though the reply was lost
            return True
        raise
    finally:
        tmp.unlink(missing_ok=True)


def read_holder(path: Path) -> Holder | None:
    """The holder named in ``path`` (``None`` if there is no such file)."""
    try:
        with open(path) as fh:  # open() revalidates NFS's cache (close-to-open consistency)
            stat, text = os.fstat(fh.fileno()), fh.read()
    except FileNotFoundError:
        return None
    try:
        return Holder(**json.loads(text), heartbeat=stat.st_mtime)
    except (ValueError, TypeError):  # not a holder: only its age can free it
        unknown = ("unknown", 0, None, None, None, None, stat.st_mtime, f"inode{stat.st_ino}")
        return Holder(*unknown, heartbeat=stat.st_mtime)


def _take(path: Path, me: Holder, lease_s: float, depth: int = 0) -> Holder | None:
    """Make ``me`` the holder of ``path``; returns the live holder instead if there is one."""
    while not _create(path, me):
        other = read_holder(path)
        if other is None:
            continue  # released meanwhile: try again
        if (reason := other.stale(lease_s)) is None:
            return other
        breaker = path.with_name(f"{path.name}.break-{other.token}")
        rival = _take(breaker, me, lease_s, depth + 1) if depth < 4 else other
        if rival is not None:
            return rival  # another process is taking this lock over right now
        try:
            current = read_holder(path)
            if current is not None and current.token == other.token:  # unchanged: ours to take
                os.replace(_write_temp(path, me), path)
                log.info("took over the lock of %s: %s", other.describe(), reason)
                return None
        finally:
            breaker.unlink(missing_ok=True)
    return None


class RunLock:
    """The lock of one run. ``acquire`` returns the live holder instead of waiting for it.

    Args:
        path: The lock file, ``<run dir>/trainer.lock``.
        lease_s: Seconds without a heartbeat after which a holder on another host is stale.
        heartbeat_s: Seconds between heartbeats (default ``lease_s / 10``).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     lock = RunLock(Path(tmp) / LOCK_NAME)
        ...     first, second = lock.acquire(), RunLock(lock.path).acquire()
        ...     lock.release()
        >>> first is None and second.pid == os.getpid()  # the second try names the holder
        True
    """

    def __init__(self, path: Path, lease_s: float = DEFAULT_LEASE_S, heartbeat_s=None) -> None:
        if not lease_s > 0:
            raise ValueError(f"lock lease must be a positive number of seconds, got {lease_s!r}")
        self.path, self.lease_s = Path(path), float(lease_s)
        self.heartbeat_s = float(heartbeat_s or self.lease_s / 10)
        self.holder: Holder | None = None  # ours, while held
        self._stop, self._beat = threading.Event(), threading.Thread()

    def acquire(self) -> Holder | None:
        """Take the lock and start the heartbeat; ``None`` when taken, else who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = Holder.me()
        other = _take(self.path, me, self.lease_s)
        if other is None:
            self.holder, self._stop = me, threading.Event()
            self._beat = threading.Thread(target=self._heartbeat, name="run-lock", daemon=True)
            self._beat.start()
        return other

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            current = read_holder(self.path)
            if current is None or current.token != self.holder.token:
                log.error("lost the lock %s to %s", self.path, current and current.describe())
                return
            os.utime(self.path)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours (a no-op when not held)."""
        if self.holder is None:
            return
        self._stop.set()
        self._beat.join()
        me, self.holder = self.holder, None
        # under the break file of our own token, so that no takeover runs while we remove it
        breaker = self.path.with_name(f"{self.path.name}.break-{me.token}")
        if not _create(breaker, me):
            return  # another process judged us stale and is replacing the lock
        try:
            current = read_holder(self.path)
            if current is not None and current.token == me.token:
                self.path.unlink()
        finally:
            breaker.unlink(missing_ok=True)
