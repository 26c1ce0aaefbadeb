"""Train/eval images per second and peak step memory: reference mode vs the fast path.

Usage (from the repository root):
    python -m benchmarks.throughput --models spikformer_4_384_cifar --downsample lif_maxpool
    python -m benchmarks.throughput --repeats 5                # every CIFAR backbone x variant
    python -m benchmarks.throughput --device cpu --memory none  # skip the memory subprocesses
    python -m benchmarks.throughput --device cuda --batch-size 64 --cuda-graph off

Both modes (`gradprobe.fast.configure`) run on the same model object (the parameter count is
asserted equal) and the same batch. After warm-up steps in each mode (which also build the
fused LIF kernel), repetitions alternate A-B-B-A so that load from other processes falls on
both modes alike; medians are reported with the ratio fast / reference.

A train step is reset_net → forward (autocast per plan) → cross-entropy → backward → AdamW step
(each mode with its own AdamW over the shared parameters). On CUDA the fast mode's train step is,
as in the harness (``trainer.cuda_graph=auto``), one replayed CUDA graph of all that
(`gradprobe.fast.CUDAGraphStep`, captured during the warm-up; ``--cuda-graph off`` times the
eager fast step instead). An eval step is reset_net → forward under ``torch.inference_mode`` in
eval mode, eager in both modes.

Model FLOP utilisation (MFU): the FLOPs of one train step are counted once with
``torch.utils.flop_counter.FlopCounterMode`` on the reference-mode formulation (convolutions and
matmuls, forward and backward; attention as ``(Q·Kᵀ)·V``, as the official code computes it), so
both modes are credited with the same model FLOPs; MFU is those FLOPs times steps per second over
the device's dense bf16/fp16 peak (``--peak-tflops``; by default 989 TFLOP/s for an H100/H200
SXM, the datasheet figure, and not reported for other devices).

Peak memory of a train step: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory held
before the step (for a replayed graph, the size of the graph's private memory pool, which holds
every tensor of its step, gradients included); on CPU, where allocator statistics do not exist, a subprocess per configuration
warms up, returns freed heap to the OS (``malloc_trim``), resets its RSS high-water mark
(``/proc/self/clear_refs``) and reports the high-water mark of one step above the RSS before it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from spikingjelly.activation_based import functional
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from gradprobe import fast
from gradprobe.downsample import list_downsamples
from gradprobe.models import create_model, list_models

MODES = ("reference", "fast")
DENSE_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4}  # SXM datasheet peaks, dense (no sparsity)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The device's dense bf16/fp16 peak in TFLOP/s, or ``None`` when unknown (CPU included)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DENSE_BF16_TFLOPS.items() if k in name), None)


class Bench:
    """One model, one batch, and a train/eval step in a given mode."""

    def __init__(self, name: str, downsample: str, args: argparse.Namespace) -> None:
        torch.manual_seed(args.seed)
        self.model = create_model(name, downsample=downsample, T=args.T, num_classes=10)
        self.device = torch.device(args.device)
        self.images = torch.rand(args.batch_size, 3, 32, 32, device=self.device)
        self.labels = torch.randint(0, 10, (args.batch_size,), device=self.device)
        self.plans = {}
        self.params = {}
        for mode in MODES:
            self.plans[mode] = fast.configure(self.model, mode, device=self.device)
            self.params[mode] = sum(p.numel() for p in self.model.parameters())
        assert self.params["reference"] == self.params["fast"], self.params
        self.optimizers = {m: torch.optim.AdamW(self.model.parameters(), lr=1e-4) for m in MODES}
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda")
        # The fast mode's train step as the harness runs it: a replayed CUDA graph on CUDA.
        self.graph = None
        if args.cuda_graph == "on" or (args.cuda_graph == "auto" and self.device.type == "cuda"):
            self.graph = fast.CUDAGraphStep(
                self.model,
                self.optimizers["fast"],
                torch.nn.functional.cross_entropy,
                self.plans["fast"],
            )
        self.graph_peak_mb = None
        self.mode = None

    def use(self, mode: str) -> fast.StepPlan:
        if mode != self.mode:
            fast.configure(self.model, mode, device=self.device)
            self.mode = mode
        return self.plans[mode]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_step(self, mode: str) -> float:
        plan = self.use(mode)
        self.model.train()
        optimizer = self.optimizers[mode]
        self._sync()
        start = time.perf_counter()
        if mode == "fast" and self.graph is not None:
            captured = self.graph.graph is not None
            self.graph(self.images, self.labels)  # the first call (a warm-up step) captures
            if not captured:
                self.graph_peak_mb = fast.graph_pool_mib(self.graph.graph)
            self._sync()
            return time.perf_counter() - start
        functional.reset_net(self.model)
        optimizer.zero_grad(set_to_none=True)
        with plan.autocast():
            loss = torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
        if plan.needs_grad_scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        self._sync()
        return time.perf_counter() - start

    def train_step_flops(self) -> int:
        """FLOPs of one train step in reference mode (forward + loss + backward, no optimizer)."""
        self.use("reference")
        self.model.train()
        with FlopCounterMode(display=False) as counter:
            functional.reset_net(self.model)
            loss = torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
            loss.backward()
        self.optimizers["reference"].zero_grad(set_to_none=True)
        functional.reset_net(self.model)
        return counter.get_total_flops()

    def eval_step(self, mode: str) -> float:
        plan = self.use(mode)
        self.model.eval()
        self._sync()
        start = time.perf_counter()
        with torch.inference_mode(), plan.autocast():
            functional.reset_net(self.model)
            self.model(self.images)
        self._sync()
        self.model.train()
        return time.perf_counter() - start

    def cuda_peak_mb(self, mode: str) -> float:
        if mode == "fast" and self.graph is not None:
            # a replay allocates nothing: its memory is the graph's pool, sized at capture
            return self.graph_peak_mb if self.graph_peak_mb is not None else float("nan")
        self.train_step(mode)
        self.optimizers[mode].zero_grad(set_to_none=True)
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.train_step(mode)
        return (torch.cuda.max_memory_allocated(self.device) - before) / 2**20


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(name: str, downsample: str, mode: str, args: argparse.Namespace) -> dict:
    """In a fresh process: warm up, then the RSS high-water mark of one train step, in MiB."""
    bench = Bench(name, downsample, args)
    for _ in range(2):
        bench.train_step(mode)
    bench.optimizers[mode].zero_grad(set_to_none=True)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    bench.train_step(mode)
    return {"peak_mb": (_rss_kb("VmHWM") - before) / 1024, "rss_mb": before / 1024}


def cpu_peak_mb(name: str, downsample: str, mode: str, args: argparse.Namespace) -> float:
    command = [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        "--child",
        mode,
        "--models",
        name,
        "--downsample",
        downsample,
        "--batch-size",
        str(args.batch_size),
        "--T",
        str(args.T),
        "--device",
        "cpu",
        "--seed",
        str(args.seed),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def measure(name: str, downsample: str, args: argparse.Namespace) -> dict:
    bench = Bench(name, downsample, args)
    for mode in MODES:  # warm-up (allocators, the fused kernel's build, cuDNN choices)
        for _ in range(args.warmup):
            bench.train_step(mode)
            bench.eval_step(mode)
    times = {(mode, kind): [] for mode in MODES for kind in ("train", "eval")}
    for rep in range(args.repeats):
        order = MODES if rep % 2 == 0 else MODES[::-1]  # A-B, B-A, ...
        for mode in order:
            times[mode, "train"].append(bench.train_step(mode))
            times[mode, "eval"].append(bench.eval_step(mode))
    row = {"model": name, "downsample": downsample, "params": bench.params["fast"]}
    for (mode, kind), values in times.items():
        seconds = statistics.median(values)
        row[f"{kind}_s_{mode}"] = seconds
        row[f"{kind}_ips_{mode}"] = args.batch_size / seconds
    for kind in ("train", "eval"):
        row[f"{kind}_x"] = row[f"{kind}_ips_fast"] / row[f"{kind}_ips_reference"]
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
                row[f"peak_mb_{mode}"] = bench.cuda_peak_mb(mode)
            else:
                row[f"peak_mb_{mode}"] = cpu_peak_mb(name, downsample, mode, args)
        row["mem_x"] = row["peak_mb_fast"] / row["peak_mb_reference"]
    row["kernel_fast"] = bench.plans["fast"].lif_kernel
    row["step_fast"] = "CUDA graph" if bench.graph is not None else "eager"
    return row


def _print_row(row: dict) -> None:
    text = (
        f"{row['model']:26s} {row['downsample']:13s} "
        f"train {row['train_s_reference']:6.3f}s/{row['train_s_fast']:6.3f}s "
        f"({row['train_x']:4.2f}x)  eval {row['eval_ips_reference']:7.1f}/"
        f"{row['eval_ips_fast']:7.1f} img/s ({row['eval_x']:4.2f}x)"
    )
    if "mem_x" in row:
        text += f"  peak {row['peak_mb_reference']:7.1f}/{row['peak_mb_fast']:7.1f} MiB"
    if "mfu_pct_fast" in row:
        text += f"  MFU {row['mfu_pct_reference']:.2f}%/{row['mfu_pct_fast']:.2f}%"
    print(text, flush=True)


def main(argv: list[str] | None = None) -> pd.DataFrame | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list_models("*_cifar"))
    parser.add_argument("--downsample", nargs="*", default=list_downsamples())
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default=str(fast.default_device()))
    parser.add_argument("--memory", choices=("measure", "none"), default="measure")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cuda-graph",
        choices=("auto", "on", "off"),
        default="auto",
        help="fast mode's train step as a replayed CUDA graph (auto: on CUDA, as the harness)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak for MFU (default: by name)"
    )
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    parser.add_argument("--child", choices=MODES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(args.models[0], args.downsample[0], args.child, args)))
        return None

    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {where}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"B={args.batch_size}, T={args.T}, median of {args.repeats} interleaved repeats "
        f"after {args.warmup} warm-up steps; load average at start {os.getloadavg()}"
    )
    print("columns: train s/step reference/fast, eval img/s reference/fast, peak step memory")
    rows = []
    for name in args.models:
        for downsample in args.downsample:
            row = measure(name, downsample, args)
            rows.append(row)
            _print_row(row)
    table = pd.DataFrame(rows)
    columns = ["model", "downsample", "params", "train_ips_reference", "train_ips_fast"]
    columns += ["train_x", "eval_ips_reference", "eval_ips_fast", "eval_x"]
    if args.memory != "none":
        columns += ["peak_mb_reference", "peak_mb_fast", "mem_x"]
    columns += ["train_gflop_per_img", "train_tflops_reference", "train_tflops_fast"]
    if "mfu_pct_fast" in rows[0]:
        columns += ["mfu_pct_reference", "mfu_pct_fast"]
    print(
        f"\nfast path: {rows[0]['kernel_fast']} LIF kernel, {rows[0]['step_fast']} train step; "
        f"load average at end {os.getloadavg()}"
    )
    print(table[columns].round(2).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return table


if __name__ == "__main__":
    main()
