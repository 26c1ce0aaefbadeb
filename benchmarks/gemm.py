"""GFLOP/s of the CPU kernels behind the fast path's choices, on Spikformer-4-384's shapes.

Usage (from the repository root):
    python -m benchmarks.gemm [--threads 2] [--repeats 10]

Token matmuls (``[T·B·N, C] x [C, C']`` at B=16, T=4, N=64): MKL's sgemm (``F.linear``, what
reference mode and the official code run) against oneDNN's 1x1 convolution on the same memory
(`gradprobe.fast.autograd.TokenLinear`'s backward), and oneDNN in bfloat16; each line also says
whether oneDNN's float32 result equals MKL's bit for bit (the forward must keep MKL's rounding).
Stem convolutions (3x3, forward + backward): float32 against bfloat16 operands
(`gradprobe.fast.autograd.BF16GradConv`'s backward).
Token BatchNorms: on the references' transposed view against contiguous rows
(`gradprobe.fast.FastPointwiseBN` unless ``exact``). The downsampling sites' max-pools, on
real-valued maps (CML) and on spikes: ATen's NCHW kernel against `gradprobe.fast.cl_pool`'s
channels-last route.
Each line prints the ratios measured side by side in this run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def seconds(fn, args: tuple, repeats: int) -> float:
    """Mean seconds of ``fn(*args)`` after two warm-up calls."""
    fn(*args)
    fn(*args)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - start) / repeats


def token_matmuls(repeats: int) -> None:
    print("token matmul [M x K] x [K x N]   MKL fp32  oneDNN fp32  oneDNN bf16  (GFLOP/s)")
    for m, k, n in [(4096, 384, 384), (4096, 384, 1536), (4096, 1536, 384)]:
        a, w = torch.randn(m, k), torch.randn(n, k)
        a4 = a.view(64, 64, 1, k).permute(0, 3, 1, 2)  # channels-last view, as _TokenLinear
        w4 = w[:, :, None, None]
        ab, wb = a.bfloat16(), w.bfloat16()
        flop = 2 * m * k * n
        rates = [
            flop / seconds(F.linear, (a, w), repeats) / 1e9,
            flop / seconds(F.conv2d, (a4, w4), repeats) / 1e9,
            flop / seconds(F.linear, (ab, wb), repeats) / 1e9,
        ]
        # the same products, rounded as MKL rounds them? (the forward must be, for its spikes)
        same = torch.equal(F.linear(a, w), F.conv2d(a4, w4).permute(0, 2, 3, 1).reshape(m, n))
        print(
            f"  [{m} x {k}] x [{k} x {n}]".ljust(34)
            + "".join(f"{r:9.1f}   " for r in rates)
            + f"oneDNN/MKL {rates[1] / rates[0]:.2f}x, bf16/MKL {rates[2] / rates[0]:.2f}x, "
            + f"oneDNN fp32 bit-equal to MKL: {'yes' if same else 'no'}"
        )


def conv_backward(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, dtype: torch.dtype) -> None:
    """dX and dW of a 3x3, stride-1, padding-1 convolution, operands cast to ``dtype`` first."""
    torch.ops.aten.convolution_backward(
        g.to(dtype), x.to(dtype), w.to(dtype), None, [1, 1], [1, 1], [1, 1],
        False, [0, 0], 1, [True, True, False],
    )  # fmt: skip


def stem_convolutions(repeats: int) -> None:
    print("3x3 conv backward (dX + dW), B*T=64   fp32  bf16 operands  (GFLOP/s)")
    for c_in, c_out, size in [(48, 96, 32), (96, 192, 32), (192, 384, 16), (384, 384, 8)]:
        x = (torch.rand(64, c_in, size, size) < 0.2).float()
        w = torch.randn(c_out, c_in, 3, 3)
        g = torch.randn(64, c_out, size, size)
        flop = 2 * 2 * 64 * size * size * c_out * c_in * 9  # dX and dW

        rates = [
            flop / seconds(conv_backward, (g, x, w, dtype), repeats) / 1e9
            for dtype in (torch.float32, torch.bfloat16)
        ]
        print(
            f"  {c_in:>3} -> {c_out:<3} at {size}x{size}".ljust(38)
            + "".join(f"{r:7.1f}   " for r in rates)
            + f"bf16/fp32 {rates[1] / rates[0]:.2f}x"
        )


def bn_step(bn: torch.nn.BatchNorm1d, x: torch.Tensor, g: torch.Tensor) -> None:
    """BatchNorm forward + backward in training mode."""
    x = x.detach().requires_grad_()
    bn(x).backward(g)


def token_batch_norms(repeats: int) -> None:
    print("token BatchNorm fwd+bwd, [T·B=64, N=64, C] fp32   transposed view  rows  (ms)")
    for c in (384, 1536):
        bn = torch.nn.BatchNorm1d(c)
        x, g = torch.randn(64, 64, c), torch.randn(64, 64, c)
        ms = [
            1e3 * seconds(bn_step, (bn, x.transpose(1, 2), g.transpose(1, 2)), repeats),
            1e3 * seconds(bn_step, (bn, x.view(-1, c), g.view(-1, c)), repeats),
        ]
        print(
            f"  C={c}".ljust(50)
            + "".join(f"{m:7.1f}   " for m in ms)
            + f"rows {ms[0] / ms[1]:.1f}x faster"
        )


def pool_step(pool, x: torch.Tensor, g: torch.Tensor) -> None:
    """MaxPool2d(3, 2, 1) forward + backward."""
    x = x.detach().requires_grad_()
    pool(x, 3, 2, 1).backward(g)


def max_pools(repeats: int) -> None:
    """Last, as it has glibc keep freed memory from here on (as fast mode does; both kernels
    timed alike), so that fresh 50 MB maps do not fault their pages in on every call."""
    from gradprobe.fast import allocator, cl_pool

    if not cl_pool.available():
        print("max-pool: the channels-last route needs TorchInductor (a C++ compiler); skipped")
        return
    retained = allocator.retain_freed_memory()
    print(
        "MaxPool2d(3, 2, 1) fwd+bwd, NCHW fp32 map          plain NCHW  channels-last  (ms)"
        + ("  [freed memory retained]" if retained else "")
    )
    for c, hw in ((192, 32), (384, 16)):
        gen = torch.Generator().manual_seed(c)
        maps = {
            "real (CML)": torch.randn(64, c, hw, hw, generator=gen),
            "spikes": (torch.rand(64, c, hw, hw, generator=gen) < 0.2).float(),
        }
        g = torch.randn(64, c, hw // 2, hw // 2, generator=gen)
        for label, x in maps.items():
            ms = [
                1e3 * seconds(pool_step, (F.max_pool2d, x, g), repeats),
                1e3 * seconds(pool_step, (cl_pool.max_pool2d, x, g), repeats),
            ]
            print(
                f"  [64, {c}, {hw}, {hw}] {label}".ljust(50)
                + "".join(f"{m:9.1f}   " for m in ms)
                + f"channels-last {ms[0] / ms[1]:.1f}x faster"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {torch.backends.cpu.get_cpu_capability()}"
    )
    token_matmuls(args.repeats)
    stem_convolutions(args.repeats)
    token_batch_norms(args.repeats)
    max_pools(args.repeats)


if __name__ == "__main__":
    main()
