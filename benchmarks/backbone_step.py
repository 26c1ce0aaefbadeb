"""CPU forward+backward time per training step for each CIFAR backbone x downsampling variant.

Usage (from the repository root, or anywhere once gradprobe is installed):
    python -m benchmarks.backbone_step --repeats 3
    python -m benchmarks.backbone_step --threads 1 --clock process  # on a busy machine
    python -m benchmarks.backbone_step --models spikformer_4_384_cifar --batch-size 16 --T 4

Each step is reset_net → forward on a random [B, 3, 32, 32] batch → cross-entropy → backward,
with BatchNorm in train mode; one warm-up step is not timed. Prints the median ms/step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch
from spikingjelly.activation_based import functional

from benchmarks.grid import add_grid_arguments
from gradprobe.models import create_model

CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def step_ms(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    repeats: int,
    clock: str = "wall",
) -> float:
    """Median time of one forward+backward step, in milliseconds.

    ``clock="process"`` measures this process's CPU time, which other jobs on a shared machine
    disturb far less than wall time (with several threads it sums their CPU time).
    """
    now = CLOCKS[clock]
    times = []
    for i in range(repeats + 1):
        start = now()
        functional.reset_net(model)
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        if i:  # the first step warms up allocators and kernels
            times.append((now() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, repeats=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (args.batch_size,))
    rows = []
    for name in args.models:
        for downsample in args.downsample:
            model = create_model(name, downsample=downsample, T=args.T, num_classes=10).train()
            ms = step_ms(model, images, labels, args.repeats, args.clock)
            rows.append({"model": name, "downsample": downsample, "ms_per_step": ms})
            print(f"{name:28s} {downsample:13s} {ms:9.1f} ms", flush=True)
    table = pd.DataFrame(rows).pivot(index="model", columns="downsample", values="ms_per_step")
    print(
        f"\nforward+backward ms/step, B={args.batch_size}, T={args.T}, "
        f"{torch.get_num_threads()} threads, {args.clock} clock, median of {args.repeats}"
    )
    print(table.round(1).to_string())
    return table


if __name__ == "__main__":
    main()
