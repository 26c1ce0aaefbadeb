"""What each optional part of the CPU fast path buys: one train step with every part, and with
each part switched off in turn, timed in interleaved rounds on the same weights and batch.

The parts are the kernels that reproduce an undocumented summation order of a vendor library to
stay bit-identical to reference mode; each is worth its maintenance only if a step is
measurably slower without it. Today that is the token BatchNorm over contiguous rows
(`gradprobe.fast.rows_bn`, ATen's statistics); a sparse token matmul (MKL's order of fused
multiply-adds over nonzero inputs) was measured here too and removed
(``benchmarks/results/cpu-2026-12-07-fast-parts``)::

    python -m benchmarks.fast_parts --model spikformer_4_384_cifar --batch-size 16 --T 4

prints per configuration the median train-step time, its ratio to the full fast path and the
loss of the first step (equal in every configuration: the parts change speed, not numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from gradprobe import fast
from gradprobe.fast import rows_bn
from gradprobe.models import create_model


@contextlib.contextmanager
def _without_rows_bn(model: torch.nn.Module) -> Iterator[None]:
    available = rows_bn.available
    rows_bn.available = lambda: False  # BN on the transposed view, reference mode's kernel
    try:
        yield
    finally:
        rows_bn.available = available


#: Configuration name → context that switches parts off (the full path switches none).
CONFIGS: dict[str, Callable[[torch.nn.Module], contextlib.AbstractContextManager]] = {
    "full fast path": lambda model: contextlib.nullcontext(),
    "without rows_bn": _without_rows_bn,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="spikformer_4_384_cifar")
    parser.add_argument("--downsample", default="lif_maxpool")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, downsample=args.downsample, T=args.T)
    plan = fast.configure(model, "fast", device="cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step sees one model
    x = torch.rand(args.batch_size, model.in_channels, model.img_size, model.img_size)
    y = torch.randint(0, 10, (args.batch_size,))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        functional.reset_net(model)
        return float(loss.detach())

    print(
        f"{args.model} ({args.downsample}), B={args.batch_size}, T={args.T}, "
        f"{args.threads} threads, grad operands {plan.grad_precision}, rows BN "
        f"{'available' if rows_bn.available() else 'unavailable'}"
    )
    losses, times = {}, {name: [] for name in CONFIGS}
    for name, off in CONFIGS.items():
        with off(model):
            losses[name] = step()
            for _ in range(args.warmup - 1):
                step()
    for _ in range(args.repeats):
        for name, off in CONFIGS.items():
            with off(model):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    full = statistics.median(times["full fast path"])
    for name in CONFIGS:
        median = statistics.median(times[name])
        print(
            f"{name:<22} {median * 1e3:8.1f} ms/step  {median / full:5.2f}x the full path  "
            f"(range {min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f} ms)  "
            f"first loss {losses[name]!r}"
        )


if __name__ == "__main__":
    main()
