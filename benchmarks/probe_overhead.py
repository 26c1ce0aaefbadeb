"""Training-step cost of the probe: probing every step vs attached-but-disabled vs never attached.

One training step is reset + forward + cross-entropy + backward + optimizer step. Two copies of
the same model (same initial weights, same batch) are timed: one never sees a probe, the other
carries one that is switched between enabled (measuring every step) and disabled. The three
conditions are interleaved, in a rotating order, for ``--reps`` rounds of ``--steps`` steps, and
the median time per step of each condition is compared with "never attached".

The default model is the SPS tokenizer at the reference stem width (384) with nothing after
the stem, so the sites are as large a share of the step as in any Spikformer: a worst case for
the probe. ``--embed-dim 128`` (the CLI default) is narrower and worse still, since the probe's
cost grows with the channels and the convolutions' with their square.

Records are dropped between rounds without converting them (converting to a DataFrame is the
probe's only host sync and happens once per logging interval, not per step).

Usage (after ``pip install -e .``)::

    python benchmarks/probe_overhead.py                          # CPU, a batch of digits
    python benchmarks/probe_overhead.py --threads 1 --clock process  # on a busy machine
    python benchmarks/probe_overhead.py --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from gradprobe.data import load_digits
from gradprobe.models import create_model
from gradprobe.probe import attach_probe

CONDITIONS = ("never attached", "attached, disabled", "probing every step")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sps_tokenizer_cifar")
    p.add_argument("--embed-dim", type=int, default=384, help="stem width (reference: 384)")
    p.add_argument("--variants", nargs="+", default=["lif_maxpool", "maxpool_lif"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--steps", type=int, default=2, help="steps per timed round")
    p.add_argument("--reps", type=int, default=3, help="rounds per condition")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="wall time, or this process's CPU time (steadier on a shared CPU)",
    )
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_variant(args: argparse.Namespace, variant: str, x: torch.Tensor, y: torch.Tensor) -> dict:
    device = x.device
    clock = time.process_time if args.clock == "process" else time.perf_counter
    torch.manual_seed(0)
    plain = create_model(
        args.model, downsample=variant, T=args.T, embed_dim=args.embed_dim, num_classes=10
    ).to(device)
    probed = copy.deepcopy(plain)
    probe = attach_probe(probed)
    setups = {
        "never attached": (plain, torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)),
        "attached, disabled": (probed, torch.optim.SGD(probed.parameters(), lr=1e-3, momentum=0.9)),
    }
    setups["probing every step"] = setups["attached, disabled"]

    def step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        functional.reset_net(model)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    times: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    for rep in range(args.reps + 1):  # round 0 warms up and is not counted
        order = CONDITIONS[rep % 3 :] + CONDITIONS[: rep % 3]
        for cond in order:
            model, opt = setups[cond]
            if cond == "probing every step":
                probe.enable()
            else:
                probe.disable()
            sync(device)
            start = clock()
            for _ in range(args.steps):
                step(model, opt)
            sync(device)
            if rep:
                times[cond].append((clock() - start) / args.steps)
            probe.clear()
    probe.remove()
    return {c: statistics.median(v) for c, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images, labels = load_digits(train=False, size=32)
    x = (images[: args.batch_size].float() / 255).to(device)
    y = labels[: args.batch_size].to(device)
    print(
        f"probe overhead per training step: {args.model} (embed_dim {args.embed_dim}), "
        f"batch {args.batch_size}, T={args.T}, {device}, {torch.get_num_threads()} CPU threads, "
        f"{args.clock} clock, median of {args.reps} interleaved rounds x {args.steps} steps"
    )
    print(f"{'variant':<14}{'condition':<22}{'ms/step':>10}{'ratio':>8}")
    for variant in args.variants:
        medians = bench_variant(args, variant, x, y)
        base = medians["never attached"]
        for cond in CONDITIONS:
            ms = medians[cond] * 1e3
            print(f"{variant:<14}{cond:<22}{ms:>10.1f}{medians[cond] / base:>8.2f}x")


if __name__ == "__main__":
    main()
