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

The kernels are C++ (AVX-512 intrinsics where the CPU has them, portable C++ otherwise), built
with PyTorch's extension loader on first use (about 30 s, cached on disk after). Without a
compiler or ninja, or after a failed build, `linear` is ``F.linear`` (a warning says so once).
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

import torch
import torch.nn.functional as F

from gradprobe.kernels import compiler_available

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

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

// o[n0 .. n0+NC) += sum over j of val[j] * w[idx[j], n0 .. n0+NC), fused multiply-adds in j
// order from zero (one accumulator per output).
template <int NC>
inline void block_chunk(const int32_t* idx, const float* val, int cnt, const float* w,
                        int64_t N, int64_t n0, float* o) {
#ifdef __AVX512F__
  constexpr int R = NC / 16;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int j = 0; j < cnt; ++j) {
    const float* row = w + static_cast<int64_t>(idx[j]) * N + n0;
    const __m512 v = _mm512_set1_ps(val[j]);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(v, _mm512_loadu_ps(row + 16 * r), acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    float* out = o + n0 + 16 * r;
    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), acc[r]));
  }
#else
  float acc[NC];
  for (int n = 0; n < NC; ++n) acc[n] = 0.f;
  for (int j = 0; j < cnt; ++j) {
    const float* row = w + static_cast<int64_t>(idx[j]) * N + n0;
    const float v = val[j];
    for (int n = 0; n < NC; ++n) acc[n] = std::fma(v, row[n], acc[n]);
  }
  for (int n = 0; n < NC; ++n) o[n0 + n] += acc[n];
#endif
}

inline void block_tail(const int32_t* idx, const float* val, int cnt, const float* w,
                       int64_t N, int64_t n0, float* o) {
  for (int64_t n = n0; n < N; ++n) {
    float acc = 0.f;
    for (int j = 0; j < cnt; ++j) acc = std::fma(val[j], w[static_cast<int64_t>(idx[j]) * N + n], acc);
    o[n] += acc;
  }
}

// The nonzero inputs of x[k0 .. k1): their indices and values, in order; returns the count.
inline int nonzeros(const float* x, int64_t k0, int64_t k1, int32_t* idx, float* val) {
  int cnt = 0;
  int64_t k = k0;
#ifdef __AVX512F__
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; k + 16 <= k1; k += 16) {
    const __m512 v = _mm512_loadu_ps(x + k);
    const __mmask16 nz = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const __m512i ks = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(k)), lane);
    _mm512_storeu_si512(idx + cnt, _mm512_maskz_compress_epi32(nz, ks));
    _mm512_storeu_ps(val + cnt, _mm512_maskz_compress_ps(nz, v));
    cnt += __builtin_popcount(static_cast<unsigned>(nz));
  }
#endif
  for (; k < k1; ++k) {  // branch-free: a mispredicted branch per spike costs more than this
    idx[cnt] = static_cast<int32_t>(k);
    val[cnt] = x[k];
    cnt += (x[k] != 0.f);
  }
  return cnt;
}

}  // namespace

// x [M, K] and wt [K, N] contiguous float32, bias [N] or empty: the output [M, N].
torch::Tensor sparse_linear(torch::Tensor x, torch::Tensor wt, torch::Tensor bias, int64_t kc) {
  const int64_t M = x.size(0), K = x.size(1), N = wt.size(1);
  auto out = torch::empty({M, N}, x.options());
  const float* X = x.data_ptr<float>();
  const float* W = wt.data_ptr<float>();
  const float* B = bias.numel() ? bias.data_ptr<float>() : nullptr;
  float* O = out.data_ptr<float>();
  constexpr int NC = 128;  // outputs per accumulator set: 8 AVX-512 registers
  constexpr int64_t TM = 32;  // rows per tile: a tile reuses each block of weights from cache
  const int64_t stride = kc + 16;
  const int64_t tiles = (M + TM - 1) / TM;
  // tiles dealt round-robin: spike density drifts along the rows (time steps, tokens)
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), tiles);
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    std::vector<int32_t> idx(TM * stride);
    std::vector<float> val(TM * stride);
    int cnt[TM];
    for (int64_t worker = w0; worker < w1; ++worker)
    for (int64_t tile = worker; tile < tiles; tile += workers) {
      const int64_t m0 = tile * TM, rows = std::min(TM, M - m0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t n = 0; n < N; ++n) O[(m0 + r) * N + n] = B ? B[n] : 0.f;
      for (int64_t k0 = 0; k0 < K; k0 += kc) {
        const int64_t k1 = std::min(K, k0 + kc);
        for (int64_t r = 0; r < rows; ++r)
          cnt[r] = nonzeros(X + (m0 + r) * K, k0, k1, &idx[r * stride], &val[r * stride]);
        int64_t n0 = 0;
        for (; n0 + NC <= N; n0 += NC)
          for (int64_t r = 0; r < rows; ++r)
            block_chunk<NC>(&idx[r * stride], &val[r * stride], cnt[r], W, N, n0, O + (m0 + r) * N);
        for (; n0 + 16 <= N; n0 += 16)
          for (int64_t r = 0; r < rows; ++r)
            block_chunk<16>(&idx[r * stride], &val[r * stride], cnt[r], W, N, n0, O + (m0 + r) * N);
        for (int64_t r = 0; r < rows; ++r)
          block_tail(&idx[r * stride], &val[r * stride], cnt[r], W, N, n0, O + (m0 + r) * N);
      }
    }
  });
  return out;
}

// x [M, K] and g [M, N] contiguous float32: gt [K, N] = x^T g, each element summed over the
// rows in order with fused multiply-adds, skipping zero inputs. Threads own ranges of K.
torch::Tensor sparse_weight_grad(torch::Tensor x, torch::Tensor g) {
  const int64_t M = x.size(0), K = x.size(1), N = g.size(1);
  auto gt = torch::zeros({K, N}, g.options());
  const float* X = x.data_ptr<float>();
  const float* G = g.data_ptr<float>();
  float* GT = gt.data_ptr<float>();
  at::parallel_for(0, K, 16, [&](int64_t k0, int64_t k1) {
    std::vector<int32_t> idx(k1 - k0 + 16);
    std::vector<float> val(k1 - k0 + 16);
    for (int64_t m = 0; m < M; ++m) {
      const int cnt = nonzeros(X + m * K, k0, k1, idx.data(), val.data());
      const float* gr = G + m * N;
      for (int j = 0; j < cnt; ++j) {
        float* out = GT + static_cast<int64_t>(idx[j]) * N;
        const float v = val[j];
        int64_t n = 0;
#ifdef __AVX512F__
        const __m512 vv = _mm512_set1_ps(v);
        for (; n + 16 <= N; n += 16)
          _mm512_storeu_ps(out + n, _mm512_fmadd_ps(vv, _mm512_loadu_ps(gr + n), _mm512_loadu_ps(out + n)));
#endif
        for (; n < N; ++n) out[n] = std::fma(v, gr[n], out[n]);
      }
    }
  });
  return gt;
}
"""

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
            cpp_sources=_SOURCE,
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
