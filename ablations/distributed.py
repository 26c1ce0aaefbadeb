"""DistributedDataParallel behind one switch, ``trainer.ddp=true``; rank 0 does all the writing.

Two ways to start the processes, nothing else to configure:

- one machine: ``torchrun --nproc_per_node=8 -m ablations.train trainer.ddp=true ...``
  (torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
- Slurm: ``launcher=slurm hydra.launcher.tasks_per_node=8 hydra.launcher.gpus_per_node=8
  trainer.ddp=true``; every Slurm task runs the job and submitit supplies the same variables.

Every rank trains on its own slice of each epoch's shuffled order and evaluates its own slice of
the test set; sums are all-reduced, so the numbers are those of the global batch. With
``trainer.ddp=false`` (the default) everything here is a no-op.

When a rank fails, the job ends on every rank, with the error recorded once. No rank waits for
another at a collective for longer than ``trainer.ddp_timeout_s`` (the process group's timeout).
Messages about the end of the job go through the job's rendezvous key-value store (the
``TCPStore`` at ``MASTER_ADDR:MASTER_PORT``), never through a collective that a dead rank could
leave hanging:

1. a rank that raises (`Dist.fail`) posts ``rank <r>: <error>`` to the store unless another rank
   posted first (``compare_set``: the first error is the cause, later ones are its echoes), then
   aborts the process group at once (its connections close). Over gloo its peers' pending collective then fails within
   seconds ("connection closed by peer"); over NCCL within the timeout (NCCL's watchdog);
2. those peers raise in turn and call `Dist.fail`, which hands them the first error;
3. rank 0 records the first error in the results store; in `Dist.close` it waits (at most the
   timeout) until every rank has said it is done, then posts ``closed``: whether it recorded a
   failure. The other ranks wait for ``closed`` (at most twice the timeout) before they leave, so
   that torchrun, which stops all ranks once one exits with an error, never cuts rank 0 short;
4. a failed rank other than 0 that hears no ``closed`` with a recorded failure (rank 0 died, hung,
   or had finished before this rank failed) records the first error itself.

Over gloo a failing rank ends the job in seconds; over NCCL in at most about twice
``trainer.ddp_timeout_s`` (default 600 s, NCCL's own default; raise it when a rank may wait longer
at a collective, e.g. while another rank scans a large dataset folder for the first time).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from omegaconf import DictConfig
from torch import nn

from ablations.checks import ConfigError

log = logging.getLogger(__name__)
#: What a store operation raises when the store or a peer is gone (DistError is a RuntimeError).
STORE_ERRORS = (RuntimeError, OSError)
#: Seconds a rank that hears of another's failure leaves its own collective to fail first.
GRACE_S = 5.0


@dataclass
class Dist:
    """This process's place in the job: ``rank`` of ``world``, GPU ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized: bool = False
    timeout_s: float = 600.0
    store: torch_dist.Store | None = None  # the job's rendezvous store (DDP only)
    key: str = ""  # this run's prefix in the store
    failed: bool = False  # this rank called `fail`, or its watchdog ends it
    _ending: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _watchdog_thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Dist:
        """Join the process group when ``cfg.ddp`` is true (the ``trainer`` group)."""
        if not cfg.ddp:
            return cls()
        timeout_s = cfg.ddp_timeout_s
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or timeout_s <= 0:
            raise ConfigError(
                f"trainer.ddp_timeout_s must be a positive integer, got {timeout_s!r}"
            )
        if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export()
        if "RANK" not in os.environ:
            raise ConfigError(
                "trainer.ddp=true needs processes started by torchrun or Slurm tasks (no RANK in "
                "the environment); choices: torchrun --nproc_per_node=N -m ablations.train ..., "
                "launcher=slurm with hydra.launcher.tasks_per_node=N"
            )
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        timeout = timedelta(seconds=timeout_s)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend=backend, timeout=timeout)
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        store = torch_dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            is_master=False,
            timeout=timeout,
            wait_for_workers=False,
        )
        dist = cls(torch_dist.get_rank(), torch_dist.get_world_size(), local_rank, True, timeout_s)
        dist.store = store
        dist.key = f"gradprobe/{dist.broadcast(secrets.token_hex(8))}/"  # one run's messages
        return dist

    def watch(self, on_peer_failure: Callable[[str], None]) -> None:
        """End this process if another rank fails while this one is stuck at a collective.

        A collective whose peer is gone does not always fail: a gloo broadcast's root, for one,
        waits for the whole timeout. So a watchdog thread waits for the job's first error in the
        store; ``GRACE_S`` after it appears, if this rank has neither failed by itself nor
        closed, rank 0 calls ``on_peer_failure(first error)`` (record it, release the run's
        lock), posts ``closed``, and the process exits with status 1.
        """
        if not self.initialized or self.world == 1:
            return
        self._watchdog_thread = threading.Thread(
            target=self._watchdog, args=(on_peer_failure,), name="ddp-watchdog", daemon=True
        )
        self._watchdog_thread.start()

    def _watchdog(self, on_peer_failure: Callable[[str], None]) -> None:
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        try:  # a client of its own: the main thread may be inside a call to the other one
            store = torch_dist.TCPStore(host, port, is_master=False, wait_for_workers=False)
        except STORE_ERRORS:
            return
        error = self.key + "error"
        while not self._stop.wait(0.5):  # polled: a blocking wait could outlive the process
            if self.failed:
                return
            try:
                if store.check([error]):
                    break
            except STORE_ERRORS:
                return  # the store is gone: so is the job
        else:
            return  # closed
        if self._stop.wait(GRACE_S):
            return
        with self._ending:
            if self.failed or not self.initialized:
                return
            self.failed = True
        try:
            first = store.get(error).decode()
            log.error("%s; rank %d was waiting for it at a collective: ending", first, self.rank)
            if self.is_main:
                on_peer_failure(first)
                store.set(f"{self.key}done/{self.rank}", "failed")
                store.set(self.key + "closed", "recorded")
        except Exception:
            log.exception("rank %d could not record the job's failure", self.rank)
        finally:
            logging.shutdown()
            os._exit(1)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` on ``device``, inside DistributedDataParallel when there are several ranks."""
        module = module.to(device)
        if self.world == 1:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over all ranks (itself with one rank)."""
        if self.world > 1:
            tensor = tensor.clone()
            torch_dist.all_reduce(tensor)
        return tensor

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if self.world == 1:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box)
        return box[0]

    def fail(self, message: str) -> str | None:
        """Report that this rank's run failed; returns the error to record here, or ``None``.

        The error to record is the first one any rank reported (``rank <r>: ...``). Rank 0 always
        records it; another rank only when rank 0 does not confirm that it has (module docstring).
        """
        if not self.initialized:
            return message
        with self._ending:
            if self.failed:  # the watchdog is ending this process (`watch`)
                threading.Event().wait()
            self.failed = True
        mine = f"rank {self.rank}: {message}"
        try:
            first = self.store.compare_set(self.key + "error", "", mine).decode()
            self.store.set(f"{self.key}done/{self.rank}", "failed")
        except STORE_ERRORS:
            first = mine
        self._leave(abort=True)  # the others' pending collective fails instead of hanging
        if self.is_main:
            return first
        return None if self._closed() == "recorded" else first

    def close(self) -> None:
        """Leave the job: rank 0 once every rank is done, the others once rank 0 has closed."""
        if not self.initialized:
            return
        self._stop.set()
        if self._watchdog_thread is not None:
            self._watchdog_thread.join()
        if not self.failed:
            self._post(f"{self.key}done/{self.rank}", "finished")
        if self.is_main:
            done = [f"{self.key}done/{r}" for r in range(self.world)]
            try:
                self.store.wait(done, timedelta(seconds=self.timeout_s))
            except STORE_ERRORS:
                log.warning("not every rank ended within %.0f s", self.timeout_s)
            self._post(self.key + "closed", "recorded" if self.failed else "finished")
        elif not self.failed:
            self._closed()
        self._leave()
        self.initialized = False

    def _post(self, key: str, value: str) -> None:
        try:
            self.store.set(key, value)
        except STORE_ERRORS:
            log.warning("could not post %s to the job's store", key)

    def _closed(self) -> str | None:
        """Rank 0's ``closed`` message, waited for at most twice the timeout."""
        try:
            self.store.wait([self.key + "closed"], timedelta(seconds=2 * self.timeout_s + 30))
            return self.store.get(self.key + "closed").decode()
        except STORE_ERRORS:
            return None

    def _leave(self, abort: bool = False) -> None:
        """Leave the process group; ``abort`` closes its connections now.

        Destroying the group leaves its connections open while a module (DDP's reducer) still
        refers to it, so a peer blocked in a collective would wait for the whole timeout; aborting
        closes them, and over gloo the peer's collective fails within about a second.
        """
        if not torch_dist.is_initialized():
            return
        if abort and hasattr(torch_dist.distributed_c10d, "_abort_process_group"):
            torch_dist.distributed_c10d._abort_process_group()
        else:
            torch_dist.destroy_process_group()
