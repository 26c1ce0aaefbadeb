"""Train/eval images per second and peak step memory: reference mode vs the fast path.

Usage (from the repository root):
    python -m benchmarks.throughput --models spikformer_4_384_cifar --downsample lif_maxpool
    python -m benchmarks.throughput --repeats 5                # every CIFAR backbone x variant
    python -m benchmarks.throughput --device cpu --memory none  # skip the memory subprocesses

Both modes (`gradprobe.fast.configure`) run on the same model object (the parameter count is
asserted equal) and the same batch. After warm-up steps in each mode (which also build the
fused LIF kernel), repetitions alternate A-B-B-A so that load from other processes falls on
both modes alike; medians are reported with the ratio fast / reference.

A train step is reset_net → forward (autocast per plan) → cross-entropy → backward → AdamW step.
An eval step is reset_net → forward under ``torch.inference_mode`` in eval mode.

Peak memory of a train step: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory held
before the step; on CPU, where allocator statistics do not exist, a subprocess per configuration
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from gradprobe import fast
from gradprobe.downsample import list_downsamples
from gradprobe.models import create_model, list_models

MODES = ("reference", "fast")


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
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda")
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
        self._sync()
        start = time.perf_counter()
        functional.reset_net(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        with plan.autocast():
            loss = torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
        if plan.needs_grad_scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self._sync()
        return time.perf_counter() - start

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
        self.train_step(mode)
        self.optimizer.zero_grad(set_to_none=True)
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
    bench.optimizer.zero_grad(set_to_none=True)
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
    if args.memory != "none":
        for mode in MODES:
            if bench.device.type == "cuda":
                row[f"peak_mb_{mode}"] = bench.cuda_peak_mb(mode)
            else:
                row[f"peak_mb_{mode}"] = cpu_peak_mb(name, downsample, mode, args)
        row["mem_x"] = row["peak_mb_fast"] / row["peak_mb_reference"]
    row["kernel_fast"] = bench.plans["fast"].lif_kernel
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
    print(f"\nfast path: {rows[0]['kernel_fast']} LIF; load average at end {os.getloadavg()}")
    print(table[columns].round(2).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return table


if __name__ == "__main__":
    main()
