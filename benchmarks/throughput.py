"""Train/eval images per second and peak step memory: reference mode vs the fast path.

Usage (from the repository root):
    python -m benchmarks.throughput --models spikformer_4_384_cifar --downsample lif_maxpool
    python -m benchmarks.throughput --repeats 5                # every CIFAR backbone x variant
    python -m benchmarks.throughput --device cpu --memory none  # skip the memory subprocesses
    python -m benchmarks.throughput --device cuda --batch-size 64 --cuda-graph off
    python -m benchmarks.throughput --models spikformer_4_384_cifar --anchor   # + the port
    python -m benchmarks.throughput --exact   # fast mode with fp32 gradients (trainer.exact)

Both modes (`gradprobe.fast.configure`) run the same model on the same batch
(`benchmarks.bench.Bench`: what each mode runs, what a train and an eval step are); on CPU each
mode runs in its own worker process (`benchmarks.workers`), and the steps of all modes are timed
in one interleaved loop (`benchmarks.measure`: medians, ratios fast / reference, MFU, peak
memory). This module is the command line: it prints one line per backbone and variant, then the
fast path's settings and the table.

``--official FILE... --legacy DIR`` also times the official code itself in the same interleaved
loop (`benchmarks.official`), each file beside the row of the backbone and variant that compute
its network: Spikformer's ``cifar10/model.py`` beside Spikformer ``lif_maxpool``,
Spikingformer-CML's ``cifar10/CML_Spikformer.py`` beside Spikformer ``maxpool_lif``,
Spikingformer's ``cifar10/model.py`` beside Spikingformer ``lif_maxpool``; run on spikingjelly
0.0.0.0.12 with its CPU backend, on reference mode's weights and batch (parameter count asserted
equal, logit difference printed), and prints reference / official. ``--anchor`` times
spikingjelly 2.0's own Spikformer CIFAR-10 model (`benchmarks.bench.PortAnchor`), an indirect
yardstick for machines without the official code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks import official
from benchmarks.bench import MODES, OFFICIAL_OVER_PORT
from benchmarks.grid import add_grid_arguments
from benchmarks.measure import child_memory, measure
from gradprobe import fast


def _print_row(row: dict) -> None:
    text = (
        f"{row['model']:26s} {row['downsample']:13s} "
        f"train {row['train_s_reference']:6.3f}s/{row['train_s_fast']:6.3f}s "
        f"({row['train_x']:4.2f}x)  eval {row['eval_ips_reference']:7.1f}/"
        f"{row['eval_ips_fast']:7.1f} img/s ({row['eval_x']:4.2f}x)"
    )
    if "mem_x" in row:
        text += f"  peak {row['peak_mb_reference']:7.1f}/{row['peak_mb_fast']:7.1f} MiB"
    if "reserved_x" in row:
        text += (
            f" (reserved {row['reserved_mb_reference']:.0f}/{row['reserved_mb_fast']:.0f} MiB,"
            f" {row['reserved_x']:.2f}x)"
        )
    if "mfu_pct_fast" in row:
        text += f"  MFU {row['mfu_pct_reference']:.2f}%/{row['mfu_pct_fast']:.2f}%"
    text += (
        f"\n  train ratio per interleaved round: median {row['train_x_paired_median']:.2f}x, "
        f"range {row['train_x_paired_min']:.2f}-{row['train_x_paired_max']:.2f}x"
    )
    if "train_s_official" in row:
        peak = f", peak {row['peak_mb_official']:.1f} MiB" if "peak_mb_official" in row else ""
        text += (
            f"\n  official code ({row['params_official']:,} params, logits within "
            f"{row['official_logit_diff']:.1e} of reference mode's): train "
            f"{row['train_s_official']:.3f}s/step, eval {row['eval_ips_official']:.1f} img/s{peak}"
            f"; reference / official: train {row['train_ref_over_official']:.2f} (per round "
            f"{row['train_ref_over_official_paired_median']:.2f}), "
            f"eval {row['eval_ref_over_official']:.2f}; fast over official: train "
            f"{row['train_x_over_official']:.2f}x"
            + (
                f", peak memory {row['mem_x_over_official']:.2f}x"
                if "mem_x_over_official" in row
                else ""
            )
        )
    if "train_s_port" in row:
        text += (
            f"\n  anchor: spikingjelly's Spikformer port ({row['params_port']:,} params) "
            f"{row['train_s_port']:.3f}s/step; reference / (port x {OFFICIAL_OVER_PORT:.2f}) = "
            f"{row['ref_over_official_est']:.2f}"
        )
    print(text, flush=True)


def _auto_on_off(parser: argparse.ArgumentParser, flag: str, text: str) -> None:
    parser.add_argument(flag, choices=("auto", "on", "off"), default="auto", help=text)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``--child`` is the memory subprocess's, `cpu_peak_mb`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_grid_arguments(parser, repeats=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default=str(fast.default_device()))
    parser.add_argument("--memory", choices=("measure", "none"), default="measure")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    _auto_on_off(
        parser,
        "--cuda-graph",
        "fast mode's train step as a replayed CUDA graph (auto: on CUDA, as the harness)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (default: by name)"
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="fast mode with fp32 gradients and reference BatchNorm kernels (trainer.exact)",
    )
    _auto_on_off(parser, "--isolate", "time each mode in its own worker process (auto: on CPU)")
    parser.add_argument(
        "--anchor",
        action="store_true",
        help="also time spikingjelly's Spikformer port (spikformer_4_384_cifar rows only)",
    )
    parser.add_argument(
        "--official",
        nargs="+",
        type=Path,
        default=[],
        metavar="FILE",
        help="also time the official code: Spikformer's or Spikingformer's cifar10/model.py, "
        "Spikingformer-CML's cifar10/CML_Spikformer.py or cifar10/model.py; CPU, needs --legacy",
    )
    parser.add_argument(
        "--legacy",
        type=Path,
        default=None,
        metavar="DIR",
        help="spikingjelly 0.0.0.0.12 unpacked (the folder holding spikingjelly/), for --official",
    )
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--child", choices=(*MODES, "official"), default=None, help=argparse.SUPPRESS
    )
    return parser


def _official_files(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """``--official``'s files by the (backbone, variant) each computes; exits on bad options
    before anything is timed."""
    if not args.official:
        return {}
    if args.legacy is None:
        parser.error("--official needs --legacy DIR (spikingjelly 0.0.0.0.12 unpacked)")
    if torch.device(args.device).type != "cpu":
        parser.error(f"--official runs on CPU only, not --device {args.device}")
    try:
        files = official.variants(args.official, args.legacy)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    requested = {(m, d) for m in args.models for d in args.downsample}
    if missing := sorted(set(files) - requested):
        parser.error(
            f"--official builds {missing}; add them to --models/--downsample "
            f"(given: {args.models}, {args.downsample})"
        )
    return files


def _columns(table: pd.DataFrame, first: dict, args: argparse.Namespace) -> list[str]:
    """The printed table's columns (the CSV holds every column of every row)."""
    columns = ["model", "downsample", "params", "train_ips_reference", "train_ips_fast"]
    columns += ["train_x", "train_x_paired_median", "eval_ips_reference", "eval_ips_fast"]
    columns += ["eval_x"]
    if args.memory != "none":
        columns += ["peak_mb_reference", "peak_mb_fast", "mem_x"]
    if "reserved_x" in first:
        columns += ["reserved_mb_reference", "reserved_mb_fast", "reserved_x"]
    if "train_ref_over_official" in table:
        columns += ["train_ref_over_official", "eval_ref_over_official", "train_x_over_official"]
        if "peak_mb_official" in table:
            columns += ["peak_mb_official", "mem_x_over_official"]
    columns += ["train_gflop_per_img", "train_tflops_reference", "train_tflops_fast"]
    if "mfu_pct_fast" in first:
        columns += ["mfu_pct_reference", "mfu_pct_fast"]
    return columns


def _print_fast_path(first: dict) -> None:
    print(
        f"\nfast path: {first['kernel_fast']} LIF kernel, {first['grad_precision_fast']} gradient "
        f"operands, {first['token_bn_fast']} token BatchNorm, "
        f"{first['step_fast']} train step, {first['pools_fast']} max-pools"
        + (", fused AdamW" if first["fused_adamw_fast"] else "")
        + (", freed memory retained (glibc)" if first["retained_memory_fast"] else "")
        + f"; load average at end {os.getloadavg()}"
    )


def main(argv: list[str] | None = None) -> pd.DataFrame | None:
    """Run the benchmark; returns the table (``None`` for a ``--child`` subprocess)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(args.models[0], args.downsample[0], args.child, args)))
        return None
    args.official_files = _official_files(parser, args)

    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {where}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"B={args.batch_size}, T={args.T}, median of {args.repeats} interleaved repeats "
        f"after {args.warmup} warm-up steps; load average at start {os.getloadavg()}"
    )
    if args.official_files:
        found = args.official_files.items()
        print("official code: " + ", ".join(f"{m} {v}: {f}" for (m, v), f in found))
    print("columns: train s/step reference/fast, eval img/s reference/fast, peak step memory")
    rows = []
    for name in args.models:
        for downsample in args.downsample:
            row = measure(name, downsample, args)
            rows.append(row)
            _print_row(row)
    table = pd.DataFrame(rows)
    _print_fast_path(rows[0])
    print(table[_columns(table, rows[0], args)].round(2).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return table


if __name__ == "__main__":
    main()
