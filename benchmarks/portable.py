"""What portable CPU numerics cost: an exact train step with and without `gradprobe.portable`.

Usage (from the repository root):
    python -m benchmarks.portable                                    # three backbones, 1 thread
    python -m benchmarks.portable --models spikformer_4_384_cifar --threads 2 --repeats 9

Both configurations run ``trainer.exact``'s step (fast mode, fp32 gradients) on the same model
and batch (`benchmarks.bench.Bench`), each in its own worker process: ``native`` with the
libraries' own choice of instruction set, ``portable`` started with
`gradprobe.portable.child_environment` and `gradprobe.portable.enter` (ATen on AVX2, MKL's
compatible branch, oneDNN off, Inductor for x86-64-v3), as the harness runs an exact CPU run.
Their train and eval steps are timed in one interleaved loop (A-B, B-A, ...); the table prints
medians and the ratio portable / native side by side. Step times are those of this CPU only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.grid import add_grid_arguments
from benchmarks.measure import interleave, serve
from benchmarks.workers import Worker
from gradprobe import portable

LABELS = ("native", "portable")


def serve_numerics(conn, name: str, downsample: str, label: str, args: argparse.Namespace) -> None:
    """A worker: portable numerics first when ``label`` says so, then fast mode's exact step."""
    if label == "portable":
        portable.enter()
    serve(conn, name, downsample, "fast", args)


def start(name: str, downsample: str, label: str, args: argparse.Namespace) -> Worker:
    """A worker for ``label``, spawned with the environment that label computes in."""
    saved = dict(os.environ)
    if label == "portable":
        os.environ.update(portable.child_environment())
    try:
        return Worker(name, downsample, label, args, serve=serve_numerics)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, repeats=7)
    parser.set_defaults(
        models=["sps_tokenizer_cifar", "spikformer_4_384_cifar", "spikingformer_4_384_cifar"],
        downsample=["lif_maxpool"],
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    reason = portable.supported()
    if reason:
        parser.error(reason)
    # what `benchmarks.bench.Bench` and `benchmarks.measure.serve` read besides the grid
    args.device, args.exact, args.cuda_graph, args.memory = "cpu", True, "off", "none"
    info = portable.cpu_info()
    print(f"CPU: {info['model']} ({', '.join(info['flags'])}); {args.threads} thread(s) per worker")
    print(f"{'model':26s} {'variant':12s} {'train s native/portable':>24s} {'x':>6s}   eval")
    for name in args.models:
        for downsample in args.downsample:
            workers = {label: start(name, downsample, label, args) for label in LABELS}
            try:
                times = interleave(workers, list(LABELS), args)
            finally:
                for worker in workers.values():
                    worker.close()
            train = {label: median(times[label, "train"]) for label in LABELS}
            evals = {label: median(times[label, "eval"]) for label in LABELS}
            print(
                f"{name:26s} {downsample:12s} {train['native']:11.3f}/{train['portable']:.3f} s "
                f"{train['portable'] / train['native']:6.2f}x   "
                f"{evals['portable'] / evals['native']:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
