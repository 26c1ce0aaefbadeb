"""What retaining freed memory (`gradprobe.allocator`) saves per fast-mode CPU train step.

Usage (from the repository root):
    python -m benchmarks.allocator                                   # Spikformer-4-384, both tokenizers
    python -m benchmarks.allocator --models spikformer_2_384_cifar --blocks 6

One process, one model in fast mode, the same batch. Blocks of steps alternate between glibc
unmapping large freed blocks (``M_MMAP_MAX`` at its default, the free heap trimmed with
``malloc_trim`` before the block) and glibc keeping them (``M_MMAP_MAX = 0``, no trimming, as
`gradprobe.allocator.retain_freed_memory` sets it); the first step of every block is discarded
(the heap settles), and each timed step's minor page faults are counted with ``getrusage``.
The ratio is the median over paired steps, unmapped / retained.

Setting a threshold through ``mallopt`` freezes glibc's adaptive mmap threshold at the value it
has reached (at most 32 MiB), so the "unmapped" blocks may map slightly fewer of the smaller
tensors than a fresh process would; the stem maps above 32 MiB are mapped either way.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import time

import torch
from spikingjelly.activation_based import functional

from gradprobe import allocator, fast
from gradprobe.models import create_model

M_MMAP_MAX_DEFAULT = 65536
M_TRIM_THRESHOLD_DEFAULT = 128 * 1024


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(name: str, downsample: str, args: argparse.Namespace) -> dict:
    libc = ctypes.CDLL("libc.so.6")
    torch.manual_seed(args.seed)
    model = create_model(name, downsample=downsample, T=args.T, num_classes=10)
    fast.configure(model, "fast", device="cpu", retain_memory=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.rand(args.batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (args.batch_size,))

    def step() -> tuple[float, int]:
        faults, start = _faults(), time.perf_counter()
        functional.reset_net(model)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        return time.perf_counter() - start, _faults() - faults

    for _ in range(args.warmup):
        step()
    times = {"unmapped": [], "retained": []}
    faults = {"unmapped": [], "retained": []}
    for block in range(args.blocks):
        order = ("unmapped", "retained") if block % 2 == 0 else ("retained", "unmapped")
        for setting in order:
            if setting == "unmapped":
                libc.mallopt(allocator.M_MMAP_MAX, M_MMAP_MAX_DEFAULT)
                libc.mallopt(allocator.M_TRIM_THRESHOLD, M_TRIM_THRESHOLD_DEFAULT)
                libc.malloc_trim(0)
            else:
                libc.mallopt(allocator.M_MMAP_MAX, 0)
                libc.mallopt(allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD)
            step()  # the heap settles
            for _ in range(args.steps):
                seconds, count = step()
                times[setting].append(seconds)
                faults[setting].append(count)
    paired = [u / r for u, r in zip(times["unmapped"], times["retained"], strict=True)]
    return {
        "model": name,
        "downsample": downsample,
        "s_unmapped": statistics.median(times["unmapped"]),
        "s_retained": statistics.median(times["retained"]),
        "faults_unmapped": statistics.median(faults["unmapped"]),
        "faults_retained": statistics.median(faults["retained"]),
        "x_paired_median": statistics.median(paired),
        "x_paired_min": min(paired),
        "x_paired_max": max(paired),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["spikformer_4_384_cifar"])
    parser.add_argument("--downsample", nargs="*", default=["lif_maxpool", "maxpool_lif"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=8, help="blocks per setting")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not allocator.available():
        parser.error("needs glibc (Linux): other C libraries are left alone by gradprobe")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, B={args.batch_size}, "
        f"T={args.T}, {args.blocks} blocks x {args.steps} steps per setting, fast mode"
    )
    rows = []
    for name in args.models:
        for downsample in args.downsample:
            row = measure(name, downsample, args)
            rows.append(row)
            print(
                f"{name:26s} {downsample:13s} train {row['s_unmapped']:.3f}s (unmapped) / "
                f"{row['s_retained']:.3f}s (retained): {row['x_paired_median']:.3f}x paired "
                f"median (range {row['x_paired_min']:.2f}-{row['x_paired_max']:.2f}); "
                f"page faults per step {row['faults_unmapped']:.0f} / {row['faults_retained']:.0f}",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
