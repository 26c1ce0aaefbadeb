"""Portable CPU numerics: settings under which float32 results do not depend on the x86-64 CPU.

The same float32 training run gives different numbers on different processors because the math
libraries pick their code by the instruction set they find, and a wider vector or another
blocking sums in another order. Four places decide, each pinned here:

- **ATen's vectorized kernels** (elementwise maths, reductions, BatchNorm statistics) are
  compiled for several instruction sets and dispatched by the widest one the CPU has;
  ``ATEN_CPU_CAPABILITY=avx2`` makes every CPU with AVX2 run the AVX2 build. TorchInductor's
  generated C++ (the fused LIF kernel) follows the same choice of vector width.
- **TorchInductor compiles for** ``-march=native``: pinned to ``x86-64-v3`` (AVX2 + FMA, with
  floating-point contraction off as Inductor sets it), so the kernel is the same code on every
  such CPU.
- **MKL** (the GEMMs behind linear layers, attention and, here, convolutions) has per-ISA and
  per-vendor code paths; ``MKL_CBWR=COMPATIBLE`` runs its SSE2 branch, which MKL documents as
  giving the same results on every Intel or Intel-compatible CPU for a fixed thread count
  (its AVX2 branch is documented for Intel CPUs only, and AMD runs its own path).
- **oneDNN** (convolutions by default) JIT-compiles kernels per ISA and blocks them by cache
  sizes: it is switched off, so convolutions run ATen's im2col + MKL GEMM under the pin above.

ATen and MKL read their setting once, at their first computation, so a process is portable from
its start or not at all: `enter` at the top of a script (before any tensor is computed), or the
environment of `child_environment` for a fresh process (the harness runs ``trainer.exact`` CPU
runs that way). `in_force` says whether the current process is portable; `describe` is what
``environment.json`` records.

What it does not cover: another thread count (MKL's and ATen's reductions split by thread), other
versions of torch, MKL, oneDNN or glibc's libm (the scalar ``exp`` of the kernels' tails), CPUs
without AVX2 (ATen falls back to its baseline build there: different numbers), and GPUs.

Example:
    >>> from gradprobe import portable
    >>> portable.enter()  # doctest: +SKIP - first thing in a fresh process
    >>> portable.in_force()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import re
from pathlib import Path

import torch

#: What the process environment must say before torch's first computation.
ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
#: TorchInductor's ``-march`` for the compiled CPU kernels.
MARCH = "x86-64-v3"
#: The variables that cap or pin an instruction set, recorded in ``environment.json``.
ISA_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "TORCHINDUCTOR_CACHE_DIR",
)
#: CPU flags worth recording: the ones that change which kernels the libraries pick.
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
#: MKL's CNR branch codes (``mkl_cbwr_get(MKL_CBWR_BRANCH)``), by name.
MKL_BRANCHES = {
    1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
    9: "AVX", 10: "AVX2", 12: "AVX512", 14: "AVX512_E1",
}  # fmt: skip
_MKL_CBWR_BRANCH = 1
_MKL_CBWR_COMPATIBLE = 3


class PortabilityError(RuntimeError):
    """Portable numerics were asked for where they cannot be in force; one line for the user."""


@functools.cache
def cpu_info() -> dict[str, object]:
    """The CPU's model name, vendor and instruction-set flags (``/proc/cpuinfo`` on Linux)."""
    info: dict[str, object] = {"machine": platform.machine(), "model": platform.processor()}
    info.update(vendor=None, flags=[])
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        fields = {}
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        have = set(fields.get("flags", "").split())
        info.update(
            model=fields.get("model name", info["model"]),
            vendor=fields.get("vendor_id"),
            flags=[flag for flag in ISA_FLAGS if flag in have],
        )
    return info


def supported() -> str | None:
    """``None`` where portable numerics can hold here, else the one-line reason they cannot."""
    info = cpu_info()
    if info["machine"] not in ("x86_64", "AMD64"):
        return f"portable CPU numerics need an x86-64 CPU, this is {info['machine']}"
    if info["flags"] and not {"avx2", "fma"} <= set(info["flags"]):
        return f"portable CPU numerics need AVX2 and FMA; {info['model']} lacks them"
    if not torch.backends.mkl.is_available():
        return "portable CPU numerics need a torch built with MKL (the pip wheels for x86-64 are)"
    return None


@functools.cache
def _mkl() -> ctypes.CDLL | None:
    """torch's CPU library, which links MKL statically and exports its service functions."""
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        lib.mkl_serv_cbwr_get.restype = ctypes.c_int
        lib.mkl_serv_cbwr_get.argtypes = [ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return lib


def mkl_branch() -> str | None:
    """MKL's conditional-numerical-reproducibility branch in force (``None``: no MKL found)."""
    lib = _mkl()
    if lib is None:
        return None
    code = lib.mkl_serv_cbwr_get(_MKL_CBWR_BRANCH)
    return MKL_BRANCHES.get(code, str(code))


def mkl_version() -> str | None:
    """MKL's version string (``None`` without MKL)."""
    lib = _mkl()
    if lib is None:
        return None
    buffer = ctypes.create_string_buffer(256)
    try:
        lib.MKL_Get_Version_String(buffer, len(buffer))
    except AttributeError:
        return None
    return buffer.value.decode(errors="replace")


def onednn_version() -> str | None:
    """oneDNN's version as torch reports its build (``None`` when not built in)."""
    found = re.search(r"MKL-DNN v([\w.]+)", torch.__config__.show())
    return found.group(1) if found else None


def _inductor_config():
    import torch._inductor.config as inductor_config  # lazy: importing it costs ~0.5 s

    return inductor_config


def _apply_library_settings() -> None:
    """The settings that can change at run time: oneDNN off, Inductor's ``-march`` pinned."""
    torch.backends.mkldnn.enabled = False
    _inductor_config().cpp.march = MARCH


def in_force() -> bool:
    """Whether this process computes portably (ATen on AVX2, MKL on its compatible branch,
    oneDNN off, Inductor for ``x86-64-v3``). Asking fixes ATen's choice for the process."""
    return (
        supported() is None
        and torch.backends.cpu.get_cpu_capability() == "AVX2"
        and mkl_branch() == "COMPATIBLE"
        and not torch.backends.mkldnn.enabled
        and _inductor_config().cpp.march == MARCH
    )


def enter() -> None:
    """Make this process portable; call it before any tensor is computed.

    Raises:
        PortabilityError: The CPU or the torch build cannot, or the process already computed
            with other settings (then start a fresh one with `child_environment`).
    """
    reason = supported()
    if reason:
        raise PortabilityError(reason)
    os.environ.update(ENV)
    lib = _mkl()
    if lib is not None:  # the environment variable is read at MKL's first call; if it was made
        with contextlib.suppress(AttributeError):  # already, this returns an error, caught below
            lib.mkl_serv_cbwr_set(_MKL_CBWR_COMPATIBLE)
    _apply_library_settings()
    if not in_force():
        raise PortabilityError(
            "this process computed before portable CPU numerics were set (ATen "
            f"{torch.backends.cpu.get_cpu_capability()}, MKL branch {mkl_branch()}); call "
            "gradprobe.portable.enter() first thing, or start a fresh process with "
            "child_environment()"
        )


def adopt() -> bool:
    """In a process started with `child_environment` (or by a user who exported `ENV`): apply
    the run-time settings too. Returns whether the process is now portable."""
    if supported() is None and all(os.environ.get(k) == v for k, v in ENV.items()):
        _apply_library_settings()
    return in_force()


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a fresh process that computes portably.

    `ENV` on top of ``base`` (default: this process's), and a TorchInductor cache of its own:
    kernels built for another vector width must never be loaded by a portable process.
    """
    env = dict(os.environ if base is None else base)
    env.update(ENV)
    cache = env.get("TORCHINDUCTOR_CACHE_DIR")
    if cache is None:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        cache = default_cache_dir()
    if not cache.rstrip("/").endswith("portable"):
        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache) / "portable")
    return env


def describe() -> dict[str, object]:
    """What decides this process's CPU numerics, for ``environment.json``."""
    info = cpu_info()
    return {
        "cpu_model": info["model"],
        "cpu_vendor": info["vendor"],
        "cpu_flags": info["flags"],
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_version": mkl_version(),
        "mkl_cbwr_branch": mkl_branch(),
        "onednn_version": onednn_version(),
        "onednn_enabled": bool(torch.backends.mkldnn.enabled),
        "inductor_march": _inductor_config().cpp.march or "native",
        "isa_environment": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ},
        "portable_numerics": in_force(),
    }
