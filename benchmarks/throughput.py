"""Train/eval images per second and peak step memory: reference mode vs the fast path.

Usage (from the repository root):
    python -m benchmarks.throughput --models spikformer_4_384_cifar --downsample lif_maxpool
    python -m benchmarks.throughput --repeats 5                # every CIFAR backbone x variant
    python -m benchmarks.throughput --device cpu --memory none  # skip the memory subprocesses
    python -m benchmarks.throughput --device cuda --batch-size 64 --cuda-graph off
    python -m benchmarks.throughput --models spikformer_4_384_cifar --anchor   # + the port
    python -m benchmarks.throughput --exact   # fast mode with fp32 gradients (trainer.exact)

Both modes (`gradprobe.fast.configure`) run the same model (same seed, same weights; the
parameter count is asserted equal) on the same batch. On CPU each mode runs in its own worker
process (`Worker`, ``--isolate``), as each code would run alone: sharing one heap, the modes'
different allocation patterns make glibc hand memory back and fault it in again at every
switch, which costs seconds per step on a VM. After warm-up steps in each mode (which also
build the fused LIF kernel), the parent asks for one step at a time, alternating A-B-B-A so
that load from other processes falls on both modes alike; all train steps are timed before the
eval steps, so that each process repeats one kind of step. Medians are reported with the ratio
fast / reference.

The fast mode is `gradprobe.fast.configure`'s default. On CPU its forward is reference mode's
bit for bit (fused LIF kernel, the same convolution calls, token matmuls that skip zero inputs
and sum the rest in MKL's order (`gradprobe.sparse_linear`), token BatchNorm over contiguous
rows with reference mode's statistics); where the CPU has bfloat16 dot products the
backward's convolutions and token matmuls take bfloat16 operands and the LIFs save their
surrogate input in bfloat16; the fast worker's glibc keeps freed memory for reuse
(`gradprobe.allocator`, as the harness does in fast mode), while the reference worker runs under
glibc's defaults, as the official code does. ``--exact`` times the fast mode that keeps every
gradient in float32 and every BatchNorm on reference mode's kernels.

``--official FILE... --legacy DIR`` also times the official code itself in the same interleaved
loop (`benchmarks.official`), each file beside the row of the backbone and variant that compute
its network: Spikformer's ``cifar10/model.py`` beside Spikformer ``lif_maxpool``,
Spikingformer-CML's ``cifar10/CML_Spikformer.py`` beside Spikformer ``maxpool_lif``,
Spikingformer's ``cifar10/model.py`` beside Spikingformer ``lif_maxpool``; run on spikingjelly
0.0.0.0.12 with its CPU backend, on reference mode's weights and batch (parameter count asserted
equal, logit difference printed), and prints reference / official. ``--anchor`` times
spikingjelly 2.0's own Spikformer CIFAR-10 model (`PortAnchor`), an indirect yardstick for
machines without the official code.

A train step is reset_net → forward (autocast per plan) → cross-entropy → backward → AdamW step
(each mode with its own AdamW over the shared parameters; on CPU the fast mode's is PyTorch's
fused AdamW unless ``--exact``, as the harness builds it). On CUDA the fast mode's train step is,
as in the harness (``trainer.cuda_graph=auto``), one replayed CUDA graph of all that
(`gradprobe.fast.CUDAGraphStep`, captured during the warm-up; ``--cuda-graph off`` times the
eager fast step instead). An eval step is reset_net → forward under ``torch.inference_mode`` in
eval mode, eager in both modes.

The token matmuls' speed depends on how many of their inputs are zero, so the footer reports
the mean fraction of nonzero inputs of the token Linears in one forward of the benchmark batch
(at the benchmark's initialisation; trained networks fire at their own rates) and the share of
calls that skipped zeros.

Model FLOP utilisation (MFU): the FLOPs of one train step are counted once with
``torch.utils.flop_counter.FlopCounterMode`` on the reference-mode formulation (convolutions and
matmuls, forward and backward; attention as ``(Q·Kᵀ)·V``, as the official code computes it), so
both modes are credited with the same model FLOPs; MFU is those FLOPs times steps per second over
the device's dense bf16/fp16 peak (``--peak-tflops``; by default 989 TFLOP/s for an H100/H200
SXM, the datasheet figure, and not reported for other devices).

Peak memory of a train step: on CUDA ``torch.cuda.max_memory_allocated`` minus the memory held
before the step (for a replayed graph, the same measured while capturing its step), and beside
it the step's reserved memory (the caching allocator's rise from an emptied cache; for a graph,
the private pool its replays keep, fragmentation included); on CPU, where allocator statistics do not exist, a subprocess per configuration
warms up, returns freed heap to the OS (``malloc_trim``), resets its RSS high-water mark
(``/proc/self/clear_refs``) and reports the high-water mark of one step above the RSS before it.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pandas as pd
import torch
from spikingjelly.activation_based import functional
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks import official
from gradprobe import fast
from gradprobe.downsample import list_downsamples
from gradprobe.fast import allocator, sparse_linear
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

    def __init__(
        self, name: str, downsample: str, args: argparse.Namespace, serving: str | None = None
    ) -> None:
        """``serving``: the one mode this process times (a worker), or ``None`` (both)."""
        torch.manual_seed(args.seed)
        # glibc keeps freed memory only where the fast mode runs (`gradprobe.allocator`): a
        # process that serves reference mode keeps glibc's defaults, as the official code does
        self.retain_memory = serving in (None, "fast")
        self.model = create_model(name, downsample=downsample, T=args.T, num_classes=10)
        self.device = torch.device(args.device)
        self.images = torch.rand(args.batch_size, 3, 32, 32, device=self.device)
        self.labels = torch.randint(0, 10, (args.batch_size,), device=self.device)
        self.plans = {}
        self.params = {}
        self.exact = args.exact
        for mode in MODES:
            self.plans[mode] = self._configure(mode)
            self.params[mode] = sum(p.numel() for p in self.model.parameters())
        assert self.params["reference"] == self.params["fast"], self.params
        # fast mode's AdamW is fused where the plan says so, as the harness builds it
        self.fused_adamw = self.plans["fast"].fused_optimizer
        self.optimizers = {
            m: torch.optim.AdamW(
                self.model.parameters(), lr=1e-4, fused=(m == "fast" and self.fused_adamw) or None
            )
            for m in MODES
        }
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.device.type == "cuda")
        # The fast mode's train step as the harness runs it: a replayed CUDA graph on CUDA.
        self.graph = None
        if args.cuda_graph == "on" or (args.cuda_graph == "auto" and self.device.type == "cuda"):
            self.graph = fast.CUDAGraphStep(
                self.model,
                self.optimizers["fast"],
                torch.nn.functional.cross_entropy,
                self.plans["fast"],
                measure_memory=args.memory != "none",
            )
        self.graph_pool_mb = None
        self.mode = None

    def _configure(self, mode: str) -> fast.StepPlan:
        if self.retain_memory and self.device.type == "cpu":
            allocator.retain_freed_memory()  # opt-in, process-wide: before the first step
        return fast.configure(self.model, mode, device=self.device, exact=self.exact)

    def use(self, mode: str) -> fast.StepPlan:
        if mode != self.mode:
            self._configure(mode)
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
                self.graph_pool_mb = fast.graph_pool_mib(self.graph.graph)
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

    def cuda_peak_mb(self, mode: str) -> tuple[float, float]:
        """A train step's peak memory in MiB: (allocated, reserved) above what was held before.

        Allocated is ``torch.cuda.max_memory_allocated``'s rise during the step; reserved is the
        allocator's rise in reserved memory from an emptied cache (the step's footprint on the
        device, fragmentation included). A replayed graph allocates nothing: its allocated peak
        is the captured step's (`fast.CUDAGraphStep.peak_mib`) and its footprint the private
        pool it keeps (`fast.graph_pool_mib`).
        """
        nan = float("nan")
        if mode == "fast" and self.graph is not None:
            allocated = self.graph.peak_mib
            reserved = self.graph_pool_mb
            return (nan if allocated is None else allocated, nan if reserved is None else reserved)
        self.train_step(mode)
        self.optimizers[mode].zero_grad(set_to_none=True)
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        allocated = torch.cuda.memory_allocated(self.device)
        reserved = torch.cuda.memory_reserved(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.train_step(mode)
        return (
            (torch.cuda.max_memory_allocated(self.device) - allocated) / 2**20,
            (torch.cuda.max_memory_reserved(self.device) - reserved) / 2**20,
        )


class PortAnchor:
    """spikingjelly 2.0's own Spikformer CIFAR-10 model, trained like `Bench` trains ours.

    The official Spikformer code is not part of this repository; spikingjelly's port of it is
    installed with the stack. Measured on one 2-core CPU (B=16, T=4, fp32), the official CIFAR
    code took 2.06 s per train step and the port 1.23 s (`OFFICIAL_OVER_PORT`). Timing the port
    beside reference mode in the same run gives reference mode's time relative to an estimate
    of the official code's on this machine: ``reference / (port x OFFICIAL_OVER_PORT)``. The
    estimate assumes both codes slow down alike from machine to machine, which need not hold
    (on one slower VM the official code took about 1.2x the port, not 1.67x); ``--official``
    times the official code itself and is the measurement to prefer where its files are at hand.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        from spikingjelly.activation_based.model.spikformer import spikformer_cifar10

        torch.manual_seed(args.seed)
        self.model = spikformer_cifar10(T=args.T, num_classes=10).to(args.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.images = torch.rand(args.batch_size, 3, 32, 32, device=args.device)
        self.labels = torch.randint(0, 10, (args.batch_size,), device=args.device)
        self.params = sum(p.numel() for p in self.model.parameters())

    def train_step(self) -> float:
        start = time.perf_counter()
        functional.reset_net(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.images)
        logits = logits.mean(0) if logits.dim() == 3 else logits  # [T, B, classes] → [B, classes]
        torch.nn.functional.cross_entropy(logits, self.labels).backward()
        self.optimizer.step()
        return time.perf_counter() - start


OFFICIAL_OVER_PORT = 2.06 / 1.23


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
    if args.exact:
        command.append("--exact")
    if mode == "official":
        command += [
            "--legacy",
            str(args.legacy),
            "--official",
            str(args.official_files[name, downsample]),
        ]
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(command, cwd=root, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def _serve(conn, name: str, downsample: str, label: str, args: argparse.Namespace) -> None:
    """A worker process: build one mode of `Bench` (or the `PortAnchor`, or the official code's
    `official.OfficialModel`), then time the steps the parent asks for (``"train"``/``"eval"``)
    until it sends ``None``."""
    try:
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
        conn.send(("ready", params))
        while (kind := conn.recv()) is not None:
            conn.send(("ok", steps[kind]()))
    except Exception:  # the parent re-raises it with the worker's traceback
        conn.send(("error", traceback.format_exc()))


class Worker:
    """One mode in its own process, so that each keeps its own warm heap: in one process the
    modes' different allocation patterns make glibc return and re-fault memory on every switch
    (seconds of page faults per step on a VM), which is not how either code runs."""

    def __init__(
        self, name: str, downsample: str, label: str, args: argparse.Namespace, serve=None
    ) -> None:
        """``serve(conn, name, downsample, label, args)`` runs in the worker (default `_serve`):
        it sends ``("ready", value)``, then answers each request with ``("ok", value)`` until
        it receives ``None``, or sends ``("error", traceback)``."""
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        serve = serve or _serve
        self.process = ctx.Process(target=serve, args=(child, name, downsample, label, args))
        self.process.start()
        self.params = self._reply()

    def _reply(self) -> float:
        status, value = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"benchmark worker failed:\n{value}")
        return value

    def __call__(self, kind: str) -> float:
        self.conn.send(kind)
        return self._reply()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join()


def per_round(times: dict, numerator: str, denominator: str) -> list[float]:
    """The train-step ratio ``numerator / denominator`` within each interleaved round."""
    pairs = zip(times[numerator, "train"], times[denominator, "train"], strict=True)
    return [a / b for a, b in pairs]


def measure(name: str, downsample: str, args: argparse.Namespace) -> dict:
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
        runners = {label: Worker(name, downsample, label, args) for label in labels}
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

    def kinds(label: str) -> tuple[str, ...]:
        return ("train",) if label == "port" else ("train", "eval")

    # Train steps first, then eval steps, each phase with its own warm-up: alternating the two
    # in one process would churn the heap between their allocation patterns.
    times = {}
    for kind in ("train", "eval"):
        phase = [label for label in labels if kind in kinds(label)]
        for label in phase:  # warm-up (allocators, the fused kernel's build, cuDNN choices)
            for _ in range(args.warmup):
                runners[label](kind)
        for label in phase:
            times[label, kind] = []
        for rep in range(args.repeats):
            for label in phase if rep % 2 == 0 else phase[::-1]:  # A-B-C, C-B-A, ...
                times[label, kind].append(runners[label](kind))
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
    plan = bench.plans["fast"]
    row["kernel_fast"] = plan.lif_kernel
    row["step_fast"] = "CUDA graph" if bench.graph is not None else "eager"
    row["grad_precision_fast"] = plan.grad_precision
    row["exact_fast"] = plan.exact
    row["fused_adamw_fast"] = bench.fused_adamw
    row["retained_memory_fast"] = device.type == "cpu" and allocator.available()
    row["pools_fast"] = "channels-last" if plan.channels_last_pools else "plain"
    row["sparse_matmul_fast"] = plan.sparse_token_matmul
    if plan.sparse_token_matmul:
        row["token_nonzero_fast"], row["sparse_share_fast"] = token_inputs(bench)
    if bench.device.type != "cpu":
        row["token_bn_fast"] = "model's own"
    elif plan.exact or plan.lif_kernel != "fused-inductor":
        row["token_bn_fast"] = "reference mode's"
    else:
        row["token_bn_fast"] = "rows (reference statistics)"
    return row


def token_inputs(bench: Bench) -> tuple[float, float]:
    """The mean fraction of nonzero inputs of fast mode's token Linears in one training-mode
    forward of the benchmark batch, and the share of those calls `gradprobe.sparse_linear`
    served sparse (the rest were too dense, or their shape kept MKL)."""
    densities = []

    def record(module, args):
        densities.append(torch.count_nonzero(args[0]).item() / args[0].numel())

    bench.use("fast")
    bench.model.train()
    hooks = [
        m.register_forward_pre_hook(record)
        for m in bench.model.modules()
        if isinstance(m, fast.FastPointwiseBN) and m.kind == "linear"
    ]
    before = sparse_linear.stats.copy()
    try:  # a train step's forward (autograd records: the train step's route), no backward
        functional.reset_net(bench.model)
        bench.model(bench.images)
        functional.reset_net(bench.model)
        bench.model.zero_grad(set_to_none=True)
    finally:
        for hook in hooks:
            hook.remove()
    calls = sparse_linear.stats - before
    return statistics.mean(densities), calls["sparse"] / max(1, calls.total())


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
    parser.add_argument(
        "--exact",
        action="store_true",
        help="fast mode with fp32 gradients and reference BatchNorm kernels (trainer.exact)",
    )
    parser.add_argument(
        "--isolate",
        choices=("auto", "on", "off"),
        default="auto",
        help="time each mode in its own worker process (auto: on CPU)",
    )
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
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(args.models[0], args.downsample[0], args.child, args)))
        return None
    args.official_files = {}
    if args.official:
        if args.legacy is None:
            parser.error("--official needs --legacy DIR (spikingjelly 0.0.0.0.12 unpacked)")
        if torch.device(args.device).type != "cpu":
            parser.error(f"--official runs on CPU only, not --device {args.device}")
        try:
            args.official_files = official.variants(args.official, args.legacy)
        except (FileNotFoundError, ValueError) as error:
            parser.error(str(error))
        requested = {(m, d) for m in args.models for d in args.downsample}
        if missing := sorted(set(args.official_files) - requested):
            parser.error(
                f"--official builds {missing}; add them to --models/--downsample "
                f"(given: {args.models}, {args.downsample})"
            )

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
    columns = ["model", "downsample", "params", "train_ips_reference", "train_ips_fast"]
    columns += ["train_x", "train_x_paired_median", "eval_ips_reference", "eval_ips_fast"]
    columns += ["eval_x"]
    if args.memory != "none":
        columns += ["peak_mb_reference", "peak_mb_fast", "mem_x"]
    if "reserved_x" in rows[0]:
        columns += ["reserved_mb_reference", "reserved_mb_fast", "reserved_x"]
    if "train_ref_over_official" in table:
        columns += ["train_ref_over_official", "eval_ref_over_official", "train_x_over_official"]
        if "peak_mb_official" in table:
            columns += ["peak_mb_official", "mem_x_over_official"]
    columns += ["train_gflop_per_img", "train_tflops_reference", "train_tflops_fast"]
    if "mfu_pct_fast" in rows[0]:
        columns += ["mfu_pct_reference", "mfu_pct_fast"]
    first = rows[0]
    print(
        f"\nfast path: {first['kernel_fast']} LIF kernel, {first['grad_precision_fast']} gradient "
        f"operands, {first['token_bn_fast']} token BatchNorm, "
        f"{first['step_fast']} train step, {first['pools_fast']} max-pools"
        + (
            f", sparse token matmuls ({first['sparse_share_fast']:.0%} of calls; inputs "
            f"{first['token_nonzero_fast']:.1%} nonzero)"
            if first.get("sparse_matmul_fast")
            else ""
        )
        + (", fused AdamW" if first["fused_adamw_fast"] else "")
        + (", freed memory retained (glibc)" if first["retained_memory_fast"] else "")
        + f"; load average at end {os.getloadavg()}"
    )
    print(table[columns].round(2).to_string(index=False))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return table


if __name__ == "__main__":
    main()
