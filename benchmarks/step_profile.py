"""Where a train step's time goes: torch.profiler self time by kind of work, forward vs backward.

Usage (from the repository root):
    python -m benchmarks.step_profile --threads 2                     # fast mode, official tokenizer
    python -m benchmarks.step_profile --mode reference --downsample maxpool_lif
    python -m benchmarks.step_profile --top 25                        # and the 25 costliest ops

Builds the same model, batch and train step as `benchmarks/throughput.py` in one mode
(`benchmarks.bench.Bench`), with the allocator setting that mode's worker uses, runs warm-up
steps, then profiles ``--steps`` steps with ``torch.profiler`` (CPU activities) and prints, per
step, the self time of every profiled op grouped by kind (`KINDS`) and split by whether it ran
inside the autograd engine's backward. Self times sum to the profiled time (the profiler adds a
few % overhead); the step's own wall time, measured outside the profiler, is printed beside them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.bench import Bench
from gradprobe import fast

#: Kind of work by op name: exact ATen names, or a prefix ending in ``*``. First match wins.
KINDS: dict[str, tuple[str, ...]] = {
    "matmul and convolution": (
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
    ),
    "TorchInductor kernels (LIF, rows-BN, layouts)": ("## Call CompiledFxGraph*",),
    "BatchNorm": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
    "copies and casts": ("aten::copy_", "aten::clone", "aten::_to_copy", "aten::contiguous"),
    "pooling": ("aten::max_pool2d_with_indices*", "aten::avg_pool2d*"),
    "reductions": ("aten::sum", "aten::mean"),
    "elementwise and fills": ("aten::add_", "aten::add", "aten::mul", "aten::fill_", "aten::zero_"),
    "optimizer": ("aten::_fused_adam*", "Optimizer.step*", "aten::_foreach_*"),
}
BACKWARD_MARK = "autograd::engine::evaluate_function"


def kind_of(name: str) -> str:
    for kind, patterns in KINDS.items():
        for pattern in patterns:
            if name == pattern or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                return kind
    return "other (Python, dispatch, small ops)"


def in_backward(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(BACKWARD_MARK):
            return True
        parent = parent.cpu_parent
    return False


def breakdown(events, steps: int) -> pd.DataFrame:
    """Per-step self time in ms by kind and phase, from a profiler's ``events()``."""
    rows = [
        {
            "kind": kind_of(e.name),
            "phase": "backward" if in_backward(e) else "forward and step",
            "ms": e.self_cpu_time_total / 1e3 / steps,
        }
        for e in events
    ]
    table = pd.DataFrame(rows).pivot_table(
        index="kind", columns="phase", values="ms", aggfunc="sum", fill_value=0.0
    )
    table["total"] = table.sum(axis=1)
    return table.sort_values("total", ascending=False)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spikformer_4_384_cifar")
    parser.add_argument("--downsample", default="lif_maxpool")
    parser.add_argument("--mode", choices=fast.MODES, default="fast")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--exact", action="store_true", help="fast mode as trainer.exact=true")
    parser.add_argument("--top", type=int, default=0, help="also list the N costliest ops")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device, args.cuda_graph = "cpu", "off"
    bench = Bench(args.model, args.downsample, args, serving=args.mode)
    for _ in range(args.warmup):
        bench.train_step(args.mode)
    wall = statistics.median(bench.train_step(args.mode) for _ in range(args.steps))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            bench.train_step(args.mode)
    table = breakdown(prof.events(), args.steps)
    print(
        f"{args.model} {args.downsample}, {args.mode} mode{' (exact)' if args.exact else ''}, "
        f"B={args.batch_size}, T={args.T}, {torch.get_num_threads()} threads: "
        f"{wall * 1e3:.0f} ms per train step unprofiled (median of {args.steps}); "
        f"profiled self time per step, ms:"
    )
    print(table.round(1).to_string())
    print(f"{'sum':>44s} {table['total'].sum():.1f}")
    if args.top:
        averages = prof.key_averages()
        top = sorted(averages, key=lambda e: -e.self_cpu_time_total)[: args.top]
        print(f"\n{args.top} costliest ops (self time per step, ms; calls per step):")
        for e in top:
            per_step = e.self_cpu_time_total / 1e3 / args.steps
            print(f"  {per_step:8.1f}  {e.count / args.steps:6.1f}  {e.key[:90]}")
    return table


if __name__ == "__main__":
    main()
