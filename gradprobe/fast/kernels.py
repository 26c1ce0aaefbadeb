"""Named TorchInductor kernels with eager fallbacks, shared by the CPU fast path's modules.

A `KernelSet` compiles each of its functions on first use (one C++ kernel per function, shape
and dtype, or per dtype with ``dynamic=True``). A build that fails (a broken toolchain) must not
stop training: it warns once, the set reports itself unavailable, and that call and every later
one run the eager function, which computes the same thing.

The first build of a set in a process logs one line (``gradprobe.fast.kernels``, INFO) naming
the set and how long its build takes, so that a run's first step is not silent for half a
minute. Measured on a 2-core Xeon for the quickstart model's first step: 22-34 s with an empty
TorchInductor cache, ~5 s from its on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, by default under
the system's temporary folder), of which the fused LIF set (which also starts Inductor) takes the
most.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator

import torch

log = logging.getLogger(__name__)


@functools.cache
def compiler_available() -> bool:
    """True when TorchInductor can build CPU kernels here (it needs a C++ compiler). Looked up
    once per process: the kernels ask on every call, and a PATH search costs ~0.1 ms."""
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


@contextlib.contextmanager
def recompile_room() -> Iterator[None]:
    """Dynamo compiles one variant per shape or T, flag set and dtype; a process that trains
    several models (a test run, a benchmark over backbones) exceeds its default limit of 8
    variants. A higher limit set by the user is kept."""
    config = torch._dynamo.config
    before = config.recompile_limit
    config.recompile_limit = max(before, 64)
    try:
        yield
    finally:
        config.recompile_limit = before


class KernelSet:
    """Functions compiled by TorchInductor on first call, each falling back to itself eager.

    Args:
        label: Names the set in the warning a failed build gives.
        fallback: What callers do instead once a build failed, for that warning.
        functions: The eager functions by name.
        dynamic: ``torch.compile``'s ``dynamic`` for every kernel of the set.
        options: Inductor options by function name (e.g. ``{"cpp.threads": 1}``).
        build_time: How long the set's first build takes, for the line it logs then.

    Example:
        >>> kernels = KernelSet("demo", "eager ops", {"double": lambda x: x * 2})
        >>> kernels("double", torch.ones(2))  # doctest: +SKIP
        tensor([2., 2.])
    """

    def __init__(
        self,
        label: str,
        fallback: str,
        functions: dict[str, Callable],
        *,
        dynamic: bool = False,
        options: dict[str, dict] | None = None,
        build_time: str = "a few seconds",
    ) -> None:
        self.label = label
        self.fallback = fallback
        self.eager = dict(functions)
        self.dynamic = dynamic
        self.options = options or {}
        self.build_time = build_time
        self.compiled: dict[str, Callable] = {}
        self.broken: list[str] = []  # why a build failed; the set is unavailable after one

    def available(self) -> bool:
        """Whether the compiled kernels can be used here (a C++ compiler, no failed build)."""
        return compiler_available() and not self.broken

    def __call__(self, name: str, *args: torch.Tensor):
        if not self.available():
            return self.eager[name](*args)
        if name not in self.compiled:
            if not self.compiled:
                log.info(
                    "compiling the %s CPU kernels with TorchInductor, once per process (%s)",
                    self.label,
                    self.build_time,
                )
            self.compiled[name] = torch.compile(
                self.eager[name],
                dynamic=self.dynamic,
                fullgraph=True,
                options=self.options.get(name, {}),
            )
        try:
            with recompile_room():
                return self.compiled[name](*args)
        except Exception as error:  # a broken toolchain must not stop training
            self.broken.append(f"{type(error).__name__}: {error}")
            warnings.warn(
                f"{self.label}: TorchInductor build failed ({error}); {self.fallback}",
                stacklevel=3,
            )
            return self.eager[name](*args)
