"""What retaining freed memory (`gradprobe.fast.allocator`) saves per fast-mode CPU train step.

Usage (from the repository root):
    python -m benchmarks.allocator                                   # Spikformer-4-384, both tokenizers
    python -m benchmarks.allocator --models spikformer_2_384_cifar --repeats 15

Two worker processes run the same model in fast mode on the same batch (same seed, same
weights), as the harness runs it, except that one keeps glibc's defaults (large freed blocks are
unmapped, and the next step's tensors fault their pages in again) and the other calls
`gradprobe.fast.allocator.retain_freed_memory` (an explicit opt-in). After warm-up
steps in each, the parent asks for one step at a time, alternating A-B, B-A, ... so that load
from outside falls on both alike, and each worker reports the step's seconds and minor page
faults (``getrusage``). Printed: medians, the median of the per-round ratios (default /
retained) with its range, and page faults per step.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from spikingjelly.activation_based import functional

from benchmarks.workers import Worker, answer
from gradprobe import fast
from gradprobe.fast import allocator
from gradprobe.models import create_model

SETTINGS = ("default", "retained")


def _serve(conn, name: str, downsample: str, setting: str, args: argparse.Namespace) -> None:
    """A worker: build the model in fast mode with or without retained memory, then run one
    train step per request and send back (seconds, page faults) until it receives ``None``
    (the protocol of `benchmarks.workers`)."""

    def build():
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        model = create_model(name, downsample=downsample, T=args.T, num_classes=10)
        if setting == "retained":
            allocator.retain_freed_memory()
        plan = fast.configure(model, "fast", device="cpu")
        assert plan.retained_memory == (setting == "retained")
        # the harness's optimiser in fast mode (`ablations.build.fused_optimizer`)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=plan.fused_optimizer)
        images = torch.rand(args.batch_size, 3, 32, 32)
        labels = torch.randint(0, 10, (args.batch_size,))

        def step(kind: str) -> tuple[float, int]:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            functional.reset_net(model)
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
            seconds = time.perf_counter() - start
            return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

        return None, step

    answer(conn, build)


def measure(name: str, downsample: str, args: argparse.Namespace) -> dict:
    workers = {s: Worker(name, downsample, s, args, serve=_serve) for s in SETTINGS}
    try:
        for worker in workers.values():
            for _ in range(args.warmup):
                worker("step")
        results = {setting: [] for setting in SETTINGS}
        for rep in range(args.repeats):
            for setting in SETTINGS if rep % 2 == 0 else SETTINGS[::-1]:
                results[setting].append(workers[setting]("step"))
    finally:
        for worker in workers.values():
            worker.close()
    times = {s: [seconds for seconds, _ in results[s]] for s in SETTINGS}
    paired = [d / r for d, r in zip(times["default"], times["retained"], strict=True)]
    row = {"model": name, "downsample": downsample}
    for setting in SETTINGS:
        row[f"s_{setting}"] = statistics.median(times[setting])
        row[f"faults_{setting}"] = statistics.median(f for _, f in results[setting])
    row.update(
        x_paired_median=statistics.median(paired),
        x_paired_min=min(paired),
        x_paired_max=max(paired),
    )
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["spikformer_4_384_cifar"])
    parser.add_argument("--downsample", nargs="*", default=["lif_maxpool", "maxpool_lif"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=11, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not allocator.available():
        parser.error("needs glibc (Linux): other C libraries are left alone by gradprobe")
    print(
        f"CPU, {args.threads or torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"B={args.batch_size}, T={args.T}, fast mode, median of {args.repeats} interleaved "
        f"steps after {args.warmup} warm-up steps; glibc defaults / freed memory retained"
    )
    rows = []
    for name in args.models:
        for downsample in args.downsample:
            row = measure(name, downsample, args)
            rows.append(row)
            print(
                f"{name:26s} {downsample:13s} train {row['s_default']:.3f}s / "
                f"{row['s_retained']:.3f}s: {row['x_paired_median']:.3f}x paired median "
                f"(range {row['x_paired_min']:.2f}-{row['x_paired_max']:.2f}); "
                f"page faults per step {row['faults_default']:.0f} / {row['faults_retained']:.0f}",
                flush=True,
            )
    return rows


if __name__ == "__main__":
    main()
