"""Token Linears that skip zero inputs, bit for bit the float32 matmul they replace.

Spikformer's token Linears multiply spikes (0/1) or the residual stream's small integers by a
weight, and most inputs are zero: the MLP's second Linear and the attention projection read
1-5 % nonzero spikes, q/k/v and the MLP's first Linear 20-30 % (Spikformer-4-384 on CIFAR-10
at initialisation). A dense matmul multiplies every zero anyway.

`linear` computes ``F.linear(x, weight, bias)`` from the nonzero inputs alone and returns the
*same bits*. On CPU, PyTorch's float32 ``F.linear`` is MKL's sgemm, which on a given CPU sums in
a fixed order: the output starts as the bias, the input features are taken in blocks of ``kc``
(192 on an AVX-512 CPU), and each block's sum is accumulated with fused multiply-adds in
feature order from zero, then added to the output. A zero input adds ``fma(0, w, acc) = acc``
(signed zeros included), so the same fused multiply-adds over the nonzero inputs alone, in the
same order and blocks, give the same result bit for bit (for contiguous inputs: a strided one
is multiplied as a transposed operand, in another order, and keeps ``F.linear``). ``kc`` is
not documented by MKL, so `block_size` measures it: on first use for each shape it compares
the kernel, for each candidate ``kc``, with ``F.linear`` itself on a random half-dense integer
input (every output element must match); a shape for which no candidate matches keeps
``F.linear``.

The backward can skip the zeros too: `weight_grad` sums a Linear's weight gradient
``gᵀ·x`` over the nonzero inputs alone, in float32 (more precise than the fast path's
bfloat16 matmul, and 3.5-5x faster than it at 2 % nonzeros; the Spikformer MLP's second Linear
and the attention projection are there at initialisation).

The kernels are C++ (``sparse_linear.cpp`` beside this module: AVX-512 intrinsics where the CPU
has them, portable C++ otherwise), built with PyTorch's extension loader on first use (about
30 s, cached on disk after). Without a compiler or ninja, or after a failed build, `linear` is
``F.linear`` (a warning says so once).
Inputs denser than `MAX_DENSITY` also take ``F.linear``: on two AVX-512 cores the kernel
takes 0.1-0.15x MKL's time at 2 % nonzeros, 0.45-0.6x at 25 %, 0.8x at 40 %, and breaks even
near 50 % (``python -m benchmarks.gemm``). Non-finite weights are where the results may
differ: MKL multiplies ``0 * inf`` into NaN, the kernel skips it.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from importlib import resources

import torch
import torch.nn.functional as F

from gradprobe.fast.kernels import compiler_available

#: Inputs with a larger fraction of nonzeros take ``F.linear`` (the kernel breaks even near
#: 0.5 on two AVX-512 cores, ``python -m benchmarks.gemm``).
MAX_DENSITY = 0.4

#: `weight_grad` serves inputs with at most this fraction of nonzeros (it breaks even with a
#: bfloat16 matmul near 0.12 on two AVX-512 cores, ``python -m benchmarks.gemm``).
MAX_GRAD_DENSITY = 0.08

#: Block sizes `block_size` tries, most likely first.
CANDIDATE_BLOCKS = (192, 256, 128, 384, 96, 512, 64, 1024, 48, 32)

#: How calls were served since import: `linear`'s ``"sparse"``, ``"dense"`` (too dense),
#: ``"strided"`` (a non-contiguous input), ``"unmatched"`` (no block size reproduces
#: ``F.linear``) and ``"unavailable"``; `weight_grad`'s
#: ``"grad_sparse"`` and ``"grad_dense"``.
stats: Counter = Counter()

#: The kernels' C++ source, shipped beside this module as package data.
SOURCE = "sparse_linear.cpp"

_AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"]
#: Instruction-set flags by ATen's CPU capability (the build is named after it, so machines
#: sharing a cache directory never load one another's build).
_FLAGS = {"AVX512": _AVX512, "AVX512_BF16": _AVX512, "AMX": _AVX512, "AVX2": ["-mavx2", "-mfma"]}


def _capability() -> str:
    return torch.backends.cpu.get_cpu_capability()


@functools.cache
def _module():
    """The built extension, or ``None`` (warned once) where it cannot be built."""
    if not compiler_available():
        return None
    from torch.utils import cpp_extension

    capability = _capability()
    openmp = [] if os.name == "nt" else ["-fopenmp"]  # at::parallel_for is serial without it
    try:
        return cpp_extension.load_inline(
            f"gradprobe_sparse_linear_{capability.lower()}",
            cpp_sources=resources.files(__package__).joinpath(SOURCE).read_text(),
            functions=["sparse_linear", "sparse_weight_grad"],
            extra_cflags=["-O3", "-fno-math-errno", *_FLAGS.get(capability, []), *openmp],
            extra_ldflags=openmp,
        )
    except Exception as error:  # no ninja, a broken toolchain: F.linear does the work
        warnings.warn(
            f"sparse token Linear: C++ build failed ({type(error).__name__}: {error}); "
            "token Linears run F.linear",
            stacklevel=3,
        )
        return None


def available() -> bool:
    """Whether the kernel is built or can be (a C++ compiler; no failed build)."""
    return _module() is not None


def _kernel(x2: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor | None, kc: int):
    empty = torch.empty(0, dtype=torch.float32)
    return _module().sparse_linear(x2, wt, empty if bias is None else bias.contiguous(), kc)


@functools.cache
def _block_size(rows: int, k: int, n: int, has_bias: bool, threads: int) -> int | None:
    gen = torch.Generator().manual_seed(k * 7919 + n)
    # half-dense small integers: every block of every row has several nonzeros to sum
    x = torch.randint(0, 4, (rows, k), generator=gen).float()
    x *= torch.rand(rows, k, generator=gen) < 0.5
    weight = torch.randn(n, k, generator=gen)
    bias = torch.randn(n, generator=gen) if has_bias else None
    want = F.linear(x, weight, bias)
    wt = weight.t().contiguous()
    for kc in dict.fromkeys(min(c, k) for c in CANDIDATE_BLOCKS):
        if torch.equal(_kernel(x, wt, bias, kc), want):
            return kc
    return None


def block_size(rows: int, k: int, n: int, has_bias: bool) -> int | None:
    """The block size with which the kernel reproduces ``F.linear`` on ``[rows, k] → n``
    (with or without bias, at the current thread count) bit for bit, or ``None``. Measured
    once per shape and thread count; needs the kernel (`available`)."""
    return _block_size(rows, k, n, has_bias, torch.get_num_threads())


def weight_grad(x2: torch.Tensor, g2: torch.Tensor) -> torch.Tensor | None:
    """The weight gradient ``g2ᵀ·x2`` (``[N, K]``) of a Linear from its input rows
    ``x2 [M, K]`` and float32 output-gradient rows ``g2 [M, N]``, summed in float32 over the
    nonzero inputs only, each element in row order; or ``None`` (the caller's matmul does it)
    where the input has more than `MAX_GRAD_DENSITY` nonzeros or the kernel is unavailable.
    `stats` counts ``"grad_sparse"`` and ``"grad_dense"`` calls."""
    if not available() or density(x2) > MAX_GRAD_DENSITY:
        stats["grad_dense"] += 1
        return None
    stats["grad_sparse"] += 1
    x2, g2 = x2.float().contiguous(), g2.float().contiguous()
    return _module().sparse_weight_grad(x2, g2).t().contiguous()


def density(x2: torch.Tensor, rows: int = 256) -> float:
    """Fraction of nonzeros in ``[M, K]`` rows, estimated from about ``rows`` evenly spaced
    rows (a count over all of them would cost a third of the sparse matmul). The spacing is
    odd, so that a sample of token rows visits every token position of a power-of-two grid
    (border tokens fire less)."""
    sample = x2[:: max(1, x2.shape[0] // rows) | 1]
    return torch.count_nonzero(sample).item() / max(1, sample.numel())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """``F.linear(x, weight, bias)``, the same bits, skipping zero inputs where that is faster.

    Takes the kernel for float32 CPU tensors outside autograd (call it from a forward that
    records its own backward, or under ``torch.no_grad``) whose input is contiguous and has at
    most `MAX_DENSITY` nonzeros, once `block_size` has matched ``F.linear`` for the shape; any
    other call is ``F.linear`` (a strided input makes it multiply a transposed operand, which
    sums in another order). `stats` counts which way calls went.

    Example:
        >>> x = (torch.rand(64, 48) < 0.1).float()
        >>> w, b = torch.randn(32, 48), torch.randn(32)
        >>> torch.equal(linear(x, w, b), F.linear(x, w, b))  # doctest: +SKIP
        True
    """
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not (
        all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and x.dim() >= 2
        and weight.dim() == 2
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and not torch.is_autocast_enabled("cpu")
    ):
        return F.linear(x, weight, bias)
    if not x.is_contiguous():
        # F.linear multiplies a strided input as a transposed operand, in an order the
        # contiguous probe of `block_size` does not measure
        stats["strided"] += 1
        return F.linear(x, weight, bias)
    if not available():
        stats["unavailable"] += 1
        return F.linear(x, weight, bias)
    k = x.shape[-1]
    x2 = x.view(-1, k)
    if x2.numel() == 0 or density(x2) > MAX_DENSITY:
        stats["dense"] += 1
        return F.linear(x, weight, bias)
    kc = block_size(x2.shape[0], k, weight.shape[0], bias is not None)
    if kc is None:
        stats["unmatched"] += 1
        return F.linear(x, weight, bias)
    stats["sparse"] += 1
    out = _kernel(x2, weight.t().contiguous(), bias, kc)
    return out.view(*x.shape[:-1], weight.shape[0])
