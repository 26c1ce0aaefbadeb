"""Reference mode's LIF against the official code's own: spikingjelly 0.0.0.0.12's MultiStepLIFNode.

Usage (from the repository root; spikingjelly 0.0.0.0.12 unpacked into a folder of its own,
since it cannot be installed beside spikingjelly 2.0 under the same package name):
    pip download --no-deps spikingjelly==0.0.0.0.12 -d sj-0.0.0.0.12
    python -m zipfile -e sj-0.0.0.0.12/spikingjelly-0.0.0.0.12-py3-none-any.whl sj-0.0.0.0.12/site
    python -m benchmarks.official_lif --legacy sj-0.0.0.0.12/site

The official Spikformer and Spikingformer code runs ``clock_driven.neuron.MultiStepLIFNode`` of
spikingjelly 0.0.0.0.12; off CUDA (``backend='torch'``, spec section 1) it steps through T in
Python. Reference mode (`gradprobe.fast.configure(model, "reference")`) runs
`gradprobe.fast.LoopLIFNode` instead, written to cost what that node costs. This script checks
it on every LIF of a model: it records the LIFs' input shapes and thresholds in one
reference-mode forward, then times forward + backward of both nodes on each shape, interleaved
(A-B, B-A, ...), checks that their spikes and input gradients agree, and sums the medians over
the model's LIFs. The ratio ``ours / official`` near 1 says reference mode's neurons are as
slow as the official code's, no slower and no faster.

The legacy package is loaded from ``--legacy`` under the module name ``spikingjelly_legacy``
(`load_legacy`); nothing of it is installed or kept.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from gradprobe import fast
from gradprobe.fast import LoopLIFNode
from gradprobe.models import create_model
from gradprobe.neuron import make_neuron

LEGACY_NAME = "spikingjelly_legacy"
DOWNLOAD = (
    "pip download --no-deps spikingjelly==0.0.0.0.12 -d DIR && python -m zipfile -e "
    "DIR/spikingjelly-0.0.0.0.12-py3-none-any.whl DIR/site"
)


def load_legacy(folder: Path) -> ModuleType:
    """spikingjelly 0.0.0.0.12's ``clock_driven.neuron`` from ``folder`` (which holds its
    ``spikingjelly/`` package), imported as ``spikingjelly_legacy``."""
    init = Path(folder) / "spikingjelly" / "__init__.py"
    if not (init.parent / "clock_driven" / "neuron.py").is_file():
        raise FileNotFoundError(
            f"--legacy {str(folder)!r} holds no spikingjelly/clock_driven/neuron.py; "
            f"unpack spikingjelly 0.0.0.0.12 there: {DOWNLOAD}"
        )
    if LEGACY_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            LEGACY_NAME, init, submodule_search_locations=[str(init.parent)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[LEGACY_NAME] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{LEGACY_NAME}.clock_driven.neuron")


def lif_inputs(name: str, downsample: str, batch_size: int, T: int) -> Counter:
    """``(input shape, v_threshold)`` of every LIF call in one reference-mode forward, counted."""
    torch.manual_seed(0)
    model = create_model(name, downsample=downsample, T=T, num_classes=10)
    fast.configure(model, "reference", device="cpu")
    seen: Counter = Counter()

    def record(module: nn.Module, args: tuple) -> None:
        seen[tuple(args[0].shape), float(module.v_threshold)] += 1

    hooks = [
        m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, LoopLIFNode)
    ]
    with torch.no_grad():
        model(torch.rand(batch_size, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return seen


def ours(v_threshold: float) -> nn.Module:
    lif = make_neuron(v_threshold=v_threshold)
    fast.set_lif_kernel(lif, "loop")  # reference mode's LIF
    return lif


def official_factory(neuron_module: ModuleType) -> Callable[[float], nn.Module]:
    """The official models' LIF (spec section 1): tau 2, hard reset to 0, detach_reset, the
    default Sigmoid(alpha=4) surrogate, ``backend='torch'``."""

    def build(v_threshold: float) -> nn.Module:
        return neuron_module.MultiStepLIFNode(
            tau=2.0, v_threshold=v_threshold, detach_reset=True, backend="torch"
        )

    return build


def _step(node: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> tuple[float, tuple]:
    x = x.detach().requires_grad_()
    start = time.perf_counter()
    spikes = node(x)
    spikes.backward(grad)
    seconds = time.perf_counter() - start
    node.reset()
    return seconds, (spikes.detach(), x.grad)


def compare(
    shapes: Counter,
    builders: dict[str, Callable[[float], nn.Module]],
    repeats: int,
    warmup: int,
) -> list[dict]:
    """Median forward + backward seconds of each builder's node on each recorded shape."""
    rows = []
    for (shape, v_threshold), count in sorted(shapes.items(), key=lambda item: -item[1]):
        generator = torch.Generator().manual_seed(len(rows))
        x = torch.randn(shape, generator=generator) * 1.5 + 0.5  # spikes at every step
        grad = torch.randn(shape, generator=generator)
        nodes = {label: build(v_threshold) for label, build in builders.items()}
        times = {label: [] for label in nodes}
        results = {}
        for rep in range(warmup + repeats):
            order = list(nodes) if rep % 2 == 0 else list(nodes)[::-1]
            for label in order:
                seconds, results[label] = _step(nodes[label], x, grad)
                if rep >= warmup:
                    times[label].append(seconds)
        (a_spikes, a_grad), (b_spikes, b_grad) = results.values()
        rows.append(
            {
                "shape": shape,
                "v_threshold": v_threshold,
                "count": count,
                **{f"s_{label}": statistics.median(values) for label, values in times.items()},
                "spikes_equal": bool(torch.equal(a_spikes, b_spikes)),
                "grad_max_abs_diff": float((a_grad - b_grad).abs().max()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legacy", type=Path, required=True, help="folder holding spikingjelly/")
    parser.add_argument("--model", default="spikformer_4_384_cifar")
    parser.add_argument("--downsample", default="lif_maxpool")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    try:
        legacy = load_legacy(args.legacy)
    except FileNotFoundError as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = lif_inputs(args.model, args.downsample, args.batch_size, args.T)
    builders = {"ours": ours, "official": official_factory(legacy)}
    print(
        f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; {args.model} "
        f"({args.downsample}), B={args.batch_size}, T={args.T}: {sum(shapes.values())} LIF calls "
        f"per forward, {len(shapes)} shapes; forward+backward, median of {args.repeats}"
    )
    rows = compare(shapes, builders, args.repeats, args.warmup)
    for row in rows:
        print(
            f"{list(row['shape'])!s:22s} v_th {row['v_threshold']:.1f} x{row['count']:2d}  "
            f"ours {1e3 * row['s_ours']:7.2f} ms  official {1e3 * row['s_official']:7.2f} ms  "
            f"({row['s_ours'] / row['s_official']:.2f}x)  spikes equal: {row['spikes_equal']}, "
            f"max |grad diff| {row['grad_max_abs_diff']:.1e}"
        )
    total = {label: sum(r["count"] * r[f"s_{label}"] for r in rows) for label in builders}
    print(
        f"per train step (every LIF once): ours {total['ours']:.3f} s, official "
        f"{total['official']:.3f} s, ours / official = {total['ours'] / total['official']:.2f}"
    )
    return rows


if __name__ == "__main__":
    main()
