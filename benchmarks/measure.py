"""One row of the throughput table: both modes of a `Bench` timed in one interleaved loop.

On CPU each mode runs in its own worker process (`benchmarks.workers.Worker` serving `serve`,
``--isolate``), as each code would run alone. After warm-up steps in each mode (which also build
the fused LIF kernel), the parent asks for one step at a time, alternating A-B-B-A so that load
from other processes falls on both modes alike; all train steps are timed before the eval steps,
so that each process repeats one kind of step. Medians are reported with the ratio
fast / reference, and the same ratio within each round (`per_round`). The official code
(`benchmarks.official.OfficialModel`, ``--official``) and spikingjelly's Spikformer port
(`benchmarks.bench.PortAnchor`, ``--anchor``) join the same loop as further labels.

Model FLOP utilisation (MFU): the FLOPs of one train step are counted once with
``torch.utils.flop_counter.FlopCounterMode`` on the reference-mode formulation
(`Bench.train_step_flops`: convolutions and matmuls, forward and backward; attention as
``(Q·Kᵀ)·V``, as the official code computes it), so both modes are credited with the same model
FLOPs; MFU is those FLOPs times steps per second over the device's dense bf16/fp16 peak
(``--peak-tflops``; by default 989 TFLOP/s for an H100/H200 SXM, the datasheet figure, and not
reported for other devices).

Peak memory of a train step: on CUDA `Bench.cuda_peak_mb`; on CPU, where allocator statistics do
not exist, a subprocess per configuration (`cpu_peak_mb` → `child_memory`) warms up, returns
freed heap to the OS (``malloc_trim``), resets its RSS high-water mark (``/proc/self/clear_refs``)
and reports the high-water mark of one step above the RSS before it.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import official
from benchmarks.bench import MODES, OFFICIAL_OVER_PORT, Bench, PortAnchor
from benchmarks.workers import Worker, answer
from gradprobe.fast import allocator

DENSE_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}  # SXM datasheet peaks, dense (no sparsity)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The device's dense bf16/fp16 peak in TFLOP/s, or ``None`` when unknown (CPU included)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DENSE_BF16_TFLOPS.items() if k in name), None)


def serve(conn, name: str, downsample: str, label: str, args: argparse.Namespace) -> None:
    """A worker process: build one mode of `Bench` (or the `PortAnchor`, or the official code's
    `official.OfficialModel`), then time the steps the parent asks for (``"train"``/``"eval"``)
    until it sends ``None`` (the protocol of `benchmarks.workers`)."""

    def build():
        if args.threads:
            torch.set_num_threads(args.threads)
        if label == "port":
            anchor = PortAnchor(args)
            steps, params = {"train": anchor.train_step}, anchor.params
        elif label == "official":
            code = official.OfficialModel(
                args.official_files[name, downsample], args, (name, downsample)
            )
            steps = {**code.steps, "logit_diff": lambda: code.max_logit_diff}
            params = code.params
        else:
            bench = Bench(name, downsample, args, serving=label)
            bench.use(label)
            steps = {
                "train": functools.partial(bench.train_step, label),
                "eval": functools.partial(bench.eval_step, label),
            }
            params = bench.params[label]
        return params, lambda kind: steps[kind]()

    answer(conn, build)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(name: str, downsample: str, mode: str, args: argparse.Namespace) -> dict:
    """In a fresh process: warm up, then the RSS high-water mark of one train step, in MiB."""
    if mode == "official":  # `cpu_peak_mb` passes the one file for this variant
        code = official.OfficialModel(args.official[0], args, (name, downsample))
        step, optimizer = code.train_step, code.optimizer
    else:
        bench = Bench(name, downsample, args, serving=mode)
        step, optimizer = functools.partial(bench.train_step, mode), bench.optimizers[mode]
    for _ in range(2):
        step()
    optimizer.zero_grad(set_to_none=True)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    step()
    return {"peak_mb": (_rss_kb("VmHWM") - before) / 1024, "rss_mb": before / 1024}


def cpu_peak_mb(name: str, downsample: str, mode: str, args: argparse.Namespace) -> float:
    """A CPU train step's peak memory in MiB, from `child_memory` in a fresh process (the
    benchmark's own command line with ``--child``)."""
    command = [sys.executable, "-m", "benchmarks.throughput", "--child", mode]
    command += ["--models", name, "--downsample", downsample]
    command += ["--batch-size", str(args.batch_size), "--T", str(args.T)]
    command += ["--device", "cpu", "--seed", str(args.seed)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.exact:
        command.append("--exact")
    if mode == "official":
        command += ["--legacy", str(args.legacy)]
        command += ["--official", str(args.official_files[name, downsample])]
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def per_round(times: dict, numerator: str, denominator: str) -> list[float]:
    """The train-step ratio ``numerator / denominator`` within each interleaved round."""
    pairs = zip(times[numerator, "train"], times[denominator, "train"], strict=True)
    return [a / b for a, b in pairs]


def interleave(runners: dict, labels: list[str], args: argparse.Namespace) -> dict:
    """Step times by ``(label, kind)``: ``args.repeats`` rounds of every label, in turn.

    Train steps first, then eval steps, each phase with its own warm-up: alternating the two in
    one process would churn the heap between their allocation patterns. ``runners[label](kind)``
    runs one step and returns its seconds; the port anchor has no eval step.
    """
    times = {}
    for kind in ("train", "eval"):
        phase = [label for label in labels if kind == "train" or label != "port"]
        for label in phase:  # warm-up (allocators, the fused kernel's build, cuDNN choices)
            for _ in range(args.warmup):
                runners[label](kind)
        for label in phase:
            times[label, kind] = []
        for rep in range(args.repeats):
            for label in phase if rep % 2 == 0 else phase[::-1]:  # A-B-C, C-B-A, ...
                times[label, kind].append(runners[label](kind))
    return times


def measure(name: str, downsample: str, args: argparse.Namespace) -> dict:
    """Time ``name`` with ``downsample`` in both modes (and the extra labels ``args`` asks for)
    and return the table's row: medians, ratios, MFU, peak memory, the fast path's settings."""
    labels = list(MODES)
    if args.anchor and name == "spikformer_4_384_cifar":
        labels.append("port")
    if (name, downsample) in args.official_files:
        labels.append("official")
    device = torch.device(args.device)
    isolate = args.isolate == "on" or (args.isolate == "auto" and device.type == "cpu")
    # with workers, this process only counts parameters and FLOPs: keep glibc's defaults here
    bench = Bench(name, downsample, args, serving="reference" if isolate else None)
    if isolate:
        runners = {label: Worker(name, downsample, label, args, serve) for label in labels}
        assert all(runners[m].params == bench.params[m] for m in MODES)
    else:
        anchor = PortAnchor(args) if "port" in labels else None
        code = None
        if "official" in labels:
            code = official.OfficialModel(
                args.official_files[name, downsample], args, (name, downsample)
            )

        def in_process(label: str, kind: str) -> float:
            if label == "port":
                return anchor.train_step()
            if label == "official":
                return code.steps[kind]()
            return (bench.train_step if kind == "train" else bench.eval_step)(label)

        runners = {label: functools.partial(in_process, label) for label in labels}

    times = interleave(runners, labels, args)
    row = {"model": name, "downsample": downsample, "params": bench.params["fast"]}
    if "official" in labels:
        row["params_official"] = runners["official"].params if isolate else code.params
        row["official_logit_diff"] = (
            runners["official"]("logit_diff") if isolate else code.max_logit_diff
        )
        if row["params_official"] != row["params"]:
            raise RuntimeError(
                f"the official code has {row['params_official']:,} parameters, "
                f"{name} {row['params']:,}"
            )
    if isolate:
        for runner in runners.values():
            runner.close()
    if "port" in labels:
        row["params_port"] = runners["port"].params if isolate else anchor.params
    row["isolated"] = isolate
    for (mode, kind), values in times.items():
        seconds = statistics.median(values)
        row[f"{kind}_s_{mode}"] = seconds
        row[f"{kind}_ips_{mode}"] = args.batch_size / seconds
    for kind in ("train", "eval"):
        row[f"{kind}_x"] = row[f"{kind}_ips_fast"] / row[f"{kind}_ips_reference"]
    # the same ratio within each round of the interleaved loop (steps seconds apart), whose
    # spread shows how much load from outside moved the measurement
    paired = per_round(times, "reference", "fast")
    row["train_x_paired_median"] = statistics.median(paired)
    row["train_x_paired_min"], row["train_x_paired_max"] = min(paired), max(paired)
    flops = bench.train_step_flops()
    row["train_gflop_per_img"] = flops / args.batch_size / 1e9
    peak = peak_tflops(bench.device, args.peak_tflops)
    for mode in MODES:
        achieved = flops / row[f"train_s_{mode}"] / 1e12
        row[f"train_tflops_{mode}"] = achieved
        if peak:
            row[f"mfu_pct_{mode}"] = 100 * achieved / peak
    if args.memory != "none":
        for mode in MODES:
            if bench.device.type == "cuda":
                row[f"peak_mb_{mode}"], row[f"reserved_mb_{mode}"] = bench.cuda_peak_mb(mode)
            else:
                row[f"peak_mb_{mode}"] = cpu_peak_mb(name, downsample, mode, args)
        row["mem_x"] = row["peak_mb_fast"] / row["peak_mb_reference"]
        if "official" in labels:
            row["peak_mb_official"] = cpu_peak_mb(name, downsample, "official", args)
            row["mem_x_over_official"] = row["peak_mb_fast"] / row["peak_mb_official"]
        if "reserved_mb_fast" in row:
            row["reserved_x"] = row["reserved_mb_fast"] / row["reserved_mb_reference"]
    if "official" in labels:
        for kind in ("train", "eval"):
            row[f"{kind}_ref_over_official"] = (
                row[f"{kind}_s_reference"] / row[f"{kind}_s_official"]
            )
        paired = per_round(times, "reference", "official")
        row["train_ref_over_official_paired_median"] = statistics.median(paired)
        row["train_x_over_official"] = row["train_s_official"] / row["train_s_fast"]
    if "port" in labels:
        row["ref_over_official_est"] = row["train_s_reference"] / (
            row["train_s_port"] * OFFICIAL_OVER_PORT
        )
    row.update(fast_path(bench))
    return row


def fast_path(bench: Bench) -> dict:
    """The fast mode's settings in this process, for the table's footer (``*_fast`` columns)."""
    plan = bench.plans["fast"]
    row = {
        "kernel_fast": plan.lif_kernel,
        "step_fast": "CUDA graph" if bench.graph is not None else "eager",
        "grad_precision_fast": plan.grad_precision,
        "exact_fast": plan.exact,
        "fused_adamw_fast": bench.fused_adamw,
        "retained_memory_fast": bench.device.type == "cpu" and allocator.available(),
        "pools_fast": "channels-last" if plan.channels_last_pools else "plain",
    }
    if bench.device.type != "cpu":
        row["token_bn_fast"] = "model's own"
    elif plan.exact or plan.lif_kernel != "fused-inductor":
        row["token_bn_fast"] = "reference mode's"
    else:
        row["token_bn_fast"] = "rows (reference statistics)"
    return row
