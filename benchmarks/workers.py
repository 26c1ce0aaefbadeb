"""Benchmark workers: one configuration per process, asked for one step at a time over a pipe.

Timed in one process, two codes disturb each other: sharing one heap, their different
allocation patterns make glibc hand memory back and fault it in again at every switch, which
costs seconds per step on a VM and is not how either code runs alone. A `Worker` runs one
configuration in a spawned process that keeps its own warm heap; the parent asks for one step
at a time, so that it can alternate the workers' steps (A-B-B-A) and load from other processes
falls on all of them alike (`benchmarks.measure`, `benchmarks.allocator`).

The protocol: the worker builds its configuration and sends ``("ready", value)``, then answers
each request (a string naming the kind of step) with ``("ok", value)`` until it receives
``None``; on an exception it sends ``("error", traceback)``, which the parent raises. `answer` is
the worker's side of it, `Worker` the parent's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import traceback
from collections.abc import Callable
from typing import Any


def answer(conn, build: Callable[[], tuple[Any, Callable[[str], Any]]]) -> None:
    """Serve one worker's requests: build, send ``("ready", value)``, then answer each request.

    Args:
        conn: The worker's end of the pipe.
        build: Builds the configuration and returns ``(ready_value, step)``; ``step(kind)``
            runs one step of the requested kind and returns what the parent is sent.
    """
    try:
        ready, step = build()
        conn.send(("ready", ready))
        while (kind := conn.recv()) is not None:
            conn.send(("ok", step(kind)))
    except Exception:  # the parent re-raises it with the worker's traceback
        conn.send(("error", traceback.format_exc()))


class Worker:
    """One configuration in its own spawned process, which keeps its own warm heap.

    Example:
        >>> worker = Worker("sps_tokenizer_cifar", "maxpool_lif", "fast", args, serve=serve)
        >>> seconds = worker("train")  # one step, timed in the worker
        >>> worker.close()
    """

    def __init__(
        self,
        name: str,
        downsample: str,
        label: str,
        args: argparse.Namespace,
        serve: Callable[..., None],
    ) -> None:
        """Start the worker and wait for its ready value (`params`).

        Args:
            name: The backbone, as `gradprobe.models.create_model` names it.
            downsample: The downsampling variant.
            label: Which configuration the worker runs (a mode, ``"official"``, a setting).
            args: The benchmark's parsed arguments, handed to the worker.
            serve: ``serve(conn, name, downsample, label, args)``, a module-level function
                run in the worker; it speaks the protocol (see `answer`).

        Raises:
            RuntimeError: The worker failed; the message holds its traceback.
        """
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, name, downsample, label, args))
        self.process.start()
        self.params = self._reply()

    def _reply(self) -> Any:
        status, value = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"benchmark worker failed:\n{value}")
        return value

    def __call__(self, kind: str) -> Any:
        """Ask for one step of ``kind`` and return the worker's answer."""
        self.conn.send(kind)
        return self._reply()

    def close(self) -> None:
        """Tell the worker to stop, and wait for its process to end."""
        self.conn.send(None)
        self.process.join()
