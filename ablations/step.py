"""How one training step runs: `TrainStep` owns it, so the loop calls ``step(x, target)`` and
never asks whether the step is eager, replayed from a CUDA graph or loss-scaled."""

from __future__ import annotations

import logging

import torch
from torch import nn

from gradprobe import fast

log = logging.getLogger(__name__)


class TrainStep:
    """Forward and loss under the plan's autocast, backward, clipping and the optimiser step.

    A step replays ``graph`` (`gradprobe.fast.CUDAGraphStep`, captured on first use) where it
    can: the batch has the captured shapes and the ``probe`` does not measure this step (hooks
    do not run in a replay, so measured steps run eagerly and replayed ones count as skipped).
    If the capture fails, this step and all later ones run eagerly. Eager steps go through
    ``scaler``, a ``torch.amp.GradScaler`` that is disabled (a no-op) unless the precision is
    fp16.

    Args:
        net: The module called on a batch (per-timestep outputs ``[T, B, K]``).
        optimizer: Steps the parameters of ``net``.
        loss_fn: ``loss_fn(net(x), target) -> scalar``.
        plan: The step plan (its autocast).
        scaler: Loss scaling, enabled for fp16.
        grad_clip: Clip the global gradient norm to this, or ``None``.
        graph: The replayable step, or ``None`` for eager steps only.
        probe: The gradient-landing probe, or ``None``.

    Example:
        >>> step = TrainStep(net, optimizer, loss_fn, plan, scaler)  # doctest: +SKIP
        >>> loss, out = step(x, target)  # doctest: +SKIP
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: nn.Module,
        plan: fast.StepPlan,
        scaler: torch.amp.GradScaler,
        grad_clip: float | None = None,
        graph: fast.CUDAGraphStep | None = None,
        probe=None,
    ) -> None:
        self.net, self.optimizer, self.loss_fn, self.plan = net, optimizer, loss_fn, plan
        self.scaler, self.grad_clip, self.graph, self.probe = scaler, grad_clip, graph, probe

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on a batch; returns the detached loss and outputs."""
        if self._replays(x, target):
            replayed = self._replay(x, target)
            if replayed is not None:  # None: the capture failed, eager from now on
                return replayed
        return self._eager(x, target)

    def _replays(self, x: torch.Tensor, target: torch.Tensor) -> bool:
        measured = self.probe is not None and self.probe.samples_next
        return self.graph is not None and self.graph.fits(x, target) and not measured

    def _eager(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.plan.autocast():
            out = self.net(x)
            loss = self.loss_fn(out, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # let the autograd graph go now: a CUDA graph captured next must not meet its nodes
        return loss.detach(), out.detach()

    def _replay(
        self, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Forward, backward and update through the graph (captured first, with the probe's
        hooks off); the probe counts the step as one it did not measure. ``None`` when the
        capture failed: nothing was stepped."""
        probe, graph = self.probe, self.graph
        measuring = probe is not None and probe.enabled
        if graph.graph is None:
            if measuring:
                probe.disable()  # capturing runs the model: no measurements, no host syncs
            try:
                graph.capture(x, target)
            except Exception:  # the model is as before the capture (CUDAGraphStep restores it)
                log.warning("CUDA graph capture failed, training eagerly: %s", graph.failed)
                return None
            finally:
                if measuring:
                    probe.enable()
        loss, out = graph(x, target)
        if measuring:
            probe.skip_step()
        return loss, out
