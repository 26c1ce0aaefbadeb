"""Keep freed CPU memory in the process, so a training step does not fault its pages in again.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a large request (above
its mmap threshold, which adapts up to 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``;
the next step's tensor of the same size is a new mapping whose every 4 KiB page faults in,
zero-filled by the kernel, when first written. A Spikformer-4-384 CPU step (B=16, T=4) holds
stem maps of 12-50 MiB and faults 75,000-86,000 pages per step that way; on the 2-core VM of
our benchmarks that costs 5-7 % of the step (``benchmarks/allocator.py``: two fast-mode worker
processes, glibc's defaults against retained memory, steps interleaved, page faults counted
with ``getrusage``: 0 per step once retained).

`retain_freed_memory` tells glibc (``mallopt``) to serve every request from its heap
(``M_MMAP_MAX = 0``) and not to give the heap's free top back to the OS below 2 GiB
(``M_TRIM_THRESHOLD``): freed tensors are reused by later steps without faults (after a few
steps, once the heap holds blocks of the sizes a step asks for; ``tests/test_allocator.py``).
The step's peak memory is unchanged (what a step needs it needs either way); the process just
keeps its peak resident until it exits, as PyTorch's CUDA caching allocator does on the GPU.

It is a process-wide setting and cannot be undone: ``mallopt`` has no call that restores
glibc's adaptive threshold. So it is opt-in: nothing in gradprobe calls `retain_freed_memory`
on its own (`gradprobe.fast.configure` does not), a process that wants it (a training harness
whose config asks for it, a fast-mode benchmark worker) calls it once, and reference mode's
processes keep glibc's defaults, as the official code runs. `gradprobe.fast.StepPlan` reports
`is_retained` as ``retained_memory``. Other C libraries (macOS, musl, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

#: glibc's ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: Free heap top above this is still returned to the OS (mallopt takes an int).
TRIM_THRESHOLD = 2**31 - 1

_retained = False


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def available() -> bool:
    """Whether this process's C library is glibc, whose allocator `retain_freed_memory` tunes."""
    return _glibc() is not None


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping it (see the module docstring).

    Returns:
        True if the setting is in force (now or from an earlier call), False where the C
        library is not glibc or refused it.

    Example:
        >>> retain_freed_memory() in (True, False)
        True
    """
    global _retained
    if _retained:
        return True
    libc = _glibc()
    if libc is None:
        return False
    _retained = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _retained


def is_retained() -> bool:
    """Whether `retain_freed_memory` is in force in this process."""
    return _retained
