"""A whole CUDA training step captured once as a CUDA graph and replayed (`CUDAGraphStep`).

At batch 64 a Spikformer-4-384 step on an H100/H200 is bound by the CPU launching a few thousand
small kernels, not by the GPU; a replayed graph launches them all with one call and computes
what the eager step computes. The harness replays fast-mode steps this way on one GPU
(``trainer.cuda_graph``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from spikingjelly.activation_based import functional
from torch import nn

if TYPE_CHECKING:
    from gradprobe.fast.plan import StepPlan


class CUDAGraphStep:
    """A whole training step (forward, loss, backward, optimizer step) captured once as a CUDA
    graph and replayed for every batch.

    At batch 64 a Spikformer-4-384 step on an H100/H200 is bound by the CPU launching a few
    thousand small kernels, not by the GPU (four runs sharing one GPU each run almost as fast as
    one alone). Replaying a captured graph launches them all with one call. What it computes is
    what the eager step computes: the same kernels in the same order, on the same parameters.

    Capture needs a few warm-up steps; they run on a snapshot, and parameters, buffers and
    optimizer state are copied back afterwards, so capturing does not move the model (also when
    it fails: the error is kept in ``failed``, `fits` turns false, and the caller steps eagerly).
    Batches must keep the captured shapes (use full batches). Hooks do not run in a replayed
    step: run a step eagerly where a probe must measure (`gradprobe.probe.Probe.samples_next`).
    Parameters are updated in place, so eager steps and replays can be mixed freely, and
    learning rates set by a scheduler between steps reach the replays.

    Args:
        model: The module to call (e.g. a wrapper returning per-timestep outputs); neuron state is
            reset with spikingjelly's ``reset_net`` before each forward.
        optimizer: An optimizer that supports ``capturable=True`` (Adam, AdamW, ...); the flag is
            set at capture.
        loss_fn: ``loss_fn(model(x), target) -> scalar``.
        plan: The `gradprobe.fast.StepPlan` (its autocast is applied, without autocast's weight
            cache).
        grad_clip: Clip the global gradient norm to this (no host sync), or ``None``.
        warmup: Eager steps before capture.
        measure_memory: Record in ``peak_mib`` the most memory the captured step allocates at
            once (what ``torch.cuda.max_memory_allocated`` reports for an eager step; this resets
            the device's peak-memory statistics). Its footprint, the private pool's reserved
            size, is `graph_pool_mib`.

    Example:
        >>> step = CUDAGraphStep(model, optimizer, loss_fn, plan)  # doctest: +SKIP
        >>> loss, out = step(x, y)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn,
        plan: StepPlan,
        grad_clip: float | None = None,
        warmup: int = 3,
        measure_memory: bool = False,
    ) -> None:
        if plan.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA plan, got device {plan.device}")
        if not supports_cuda_graph(optimizer):
            raise ValueError(f"{type(optimizer).__name__} has no capturable mode")
        self.model, self.optimizer, self.loss_fn, self.plan = model, optimizer, loss_fn, plan
        self.grad_clip, self.warmup, self.measure_memory = grad_clip, warmup, measure_memory
        self.peak_mib: float | None = None  # set at capture when measure_memory
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, ...] = ()
        self._lrs: list[float] = []
        self._lr_tensors: list[torch.Tensor] = []
        self.failed: str | None = None  # why a capture failed; no replays after that

    def _step(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        functional.reset_net(self.model)
        with self.plan.autocast(cache=False):
            out = self.model(x)
            loss = self.loss_fn(out, target)
        loss.backward()
        if self.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, float(self.grad_clip), foreach=True)
        self.optimizer.step()
        return loss.detach(), out.detach()

    def _snapshot(self) -> tuple[dict, dict]:
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        saved = {name: t.detach().clone() for name, t in tensors.items()}
        state = {
            p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
            for p, s in self.optimizer.state.items()
        }
        return saved, state

    def _restore(self, saved: dict, state: dict) -> None:
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        with torch.no_grad():
            for name, t in tensors.items():
                t.copy_(saved[name])
            for p, s in self.optimizer.state.items():
                for k, v in s.items():
                    if torch.is_tensor(v):
                        v.copy_(state[p][k]) if p in state else v.zero_()

    def capture(self, x: torch.Tensor, target: torch.Tensor) -> None:
        """Warm up on (copies of) this batch, capture the step, and put the model back."""
        groups = self.optimizer.param_groups
        for group in groups:  # set here: loading a state dict may have reset it
            group["capturable"] = True
        for param, state in self.optimizer.state.items():  # eager steps count on the host
            if torch.is_tensor(state.get("step")) and state["step"].device != param.device:
                state["step"] = state["step"].to(param.device, torch.float32)
        # The graph reads each group's learning rate from a device tensor, which a replay
        # refreshes when a scheduler has set a new float; the groups keep their floats.
        self._lrs = [float(group["lr"]) for group in groups]
        self._lr_tensors = [torch.tensor(lr, device=self.plan.device) for lr in self._lrs]
        static_x, static_target = x.clone(), target.clone()
        saved, state = self._snapshot()
        try:
            for group, lr in zip(groups, self._lr_tensors, strict=True):
                group["lr"] = lr
            side = torch.cuda.Stream(self.plan.device)
            side.wait_stream(torch.cuda.current_stream(self.plan.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._step(static_x, static_target)
            torch.cuda.current_stream(self.plan.device).wait_stream(side)
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            if self.measure_memory:
                torch.cuda.synchronize(self.plan.device)
                before = torch.cuda.memory_allocated(self.plan.device)
                torch.cuda.reset_peak_memory_stats(self.plan.device)
            with torch.cuda.graph(graph):
                static_loss, static_out = self._step(static_x, static_target)
            if self.measure_memory:
                peak = torch.cuda.max_memory_allocated(self.plan.device)
                self.peak_mib = (peak - before) / 2**20
        except Exception as error:
            self.failed = f"{type(error).__name__}: {error}"
            raise
        finally:
            for group, lr in zip(groups, self._lrs, strict=True):
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            self._restore(saved, state)
        self.graph = graph
        self.static = (static_x, static_target, static_loss, static_out)

    def fits(self, x: torch.Tensor, target: torch.Tensor) -> bool:
        """Whether a batch can be replayed: the captured shapes (any shapes before capture),
        and no failed capture."""
        if self.failed is not None:
            return False
        if self.graph is None:
            return True
        static_x, static_target = self.static[:2]
        return x.shape == static_x.shape and target.shape == static_target.shape

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step on ``(x, target)``; returns the (static) loss and model output."""
        if self.graph is None:
            self.capture(x, target)
        static_x, static_target, loss, out = self.static
        if not self.fits(x, target):
            raise ValueError(
                f"batch shapes {tuple(x.shape)}/{tuple(target.shape)} differ from the captured "
                f"{tuple(static_x.shape)}/{tuple(static_target.shape)}"
            )
        for i, group in enumerate(self.optimizer.param_groups):
            if float(group["lr"]) != self._lrs[i]:  # a scheduler stepped
                self._lrs[i] = float(group["lr"])
                self._lr_tensors[i].fill_(self._lrs[i])
        static_x.copy_(x, non_blocking=True)
        static_target.copy_(target, non_blocking=True)
        self.graph.replay()
        return loss, out


def graph_pool_mib(graph: torch.cuda.CUDAGraph) -> float | None:
    """Device memory held by a captured graph's private pool, in MiB (what its replays use),
    or ``None`` when the allocator snapshot does not name pools."""
    pool = tuple(graph.pool())
    sizes = [
        segment["total_size"]
        for segment in torch.cuda.memory_snapshot()
        if tuple(segment.get("segment_pool_id") or ()) == pool
    ]
    return sum(sizes) / 2**20 if sizes else None


def supports_cuda_graph(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` has a ``capturable`` mode (Adam, AdamW, and others in torch.optim)."""
    return "capturable" in optimizer.defaults
