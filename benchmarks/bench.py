"""The benchmark's model pair: one model, one batch, and a train/eval step in either mode.

Both modes (`gradprobe.fast.configure`) run the same model (same seed, same weights; the
parameter count is asserted equal) on the same batch. The fast mode is `configure`'s default.
On CPU its forward is reference mode's bit for bit (fused LIF kernel, the same convolution
calls and token matmuls, token BatchNorm over contiguous rows with reference mode's
statistics); where the CPU has bfloat16 dot products the backward's convolutions and token
matmuls take bfloat16 operands and the LIFs save their surrogate input in bfloat16. A process
that serves the fast mode on CPU calls `gradprobe.fast.allocator.retain_freed_memory` itself
(opt-in; the harness does so only with ``trainer.retain_memory=true``), so that glibc keeps
freed memory for reuse, while a process that serves reference mode runs under glibc's
defaults, as the official code does. ``exact`` (``--exact``) is the fast mode that keeps every
gradient in float32 and every BatchNorm on reference mode's kernels.

A train step is reset_net → forward (autocast per plan) → cross-entropy → backward → AdamW step
(each mode with its own AdamW over the shared parameters; on CPU the fast mode's is PyTorch's
fused AdamW unless ``exact``, as the harness builds it). On CUDA the fast mode's train step is,
as in the harness (``trainer.cuda_graph=auto``), one replayed CUDA graph of all that
(`gradprobe.fast.CUDAGraphStep`, captured during the warm-up; ``--cuda-graph off`` times the
eager fast step instead). An eval step is reset_net → forward under ``torch.inference_mode`` in
eval mode, eager in both modes.
"""

from __future__ import annotations

import argparse
import time

import torch
from spikingjelly.activation_based import functional
from torch.utils.flop_counter import FlopCounterMode

from gradprobe import fast
from gradprobe.fast import allocator
from gradprobe.models import create_model

MODES = ("reference", "fast")


class Bench:
    """One model, one batch, and a train/eval step in a given mode."""

    def __init__(
        self, name: str, downsample: str, args: argparse.Namespace, serving: str | None = None
    ) -> None:
        """``serving``: the one mode this process times (a worker), or ``None`` (both)."""
        torch.manual_seed(args.seed)
        # glibc keeps freed memory only where the fast mode runs (`gradprobe.fast.allocator`):
        # a process that serves reference mode keeps glibc's defaults, as the official code does
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
