"""One switch between the fast path and an honest reference mode, for any gradprobe backbone.

``configure(model, mode="fast")`` is what a training harness calls once after building a model
(and before building its optimizer, since it may move the model to the device):

* every LIF becomes a `FusedLIFNode`: on CPU one fused kernel per call (a TorchInductor C++
  kernel when a compiler is available, else the same loop in eager ops); on CUDA spikingjelly's
  fused CUDA/Triton kernels. Spikes are bit-identical to the per-timestep loop;
* modules run their own forwards (broadcast input over T, no copy-back reshapes, attention as
  ``Q·(Kᵀ·V)``);
* on CPU the token Linears (``PointwiseBN`` of kind ``"linear"``, Spikformer CIFAR) become
  `FastPointwiseBN`: the forward is the same ``F.linear`` call on the same contiguous
  ``[T·B, N, C]`` tokens as reference mode (so spikes stay bit-identical), and the backward
  computes ``dX``, ``dW`` and ``db`` as a 1x1 convolution backward in oneDNN. PyTorch's CPU
  ``mm`` is MKL's sgemm, which on this AMD CPU runs about 100 GFLOP/s per core; oneDNN's
  1x1 convolution on the same memory (a channels-last view, no copy) runs about 200. Gradients
  differ from the sgemm ones by float rounding only;
* on CUDA the returned plan autocasts to bfloat16. That changes spikes (BN outputs near the
  threshold round differently), so the bf16 path is not held to spike identity; on CPU the step
  stays float32 and is spike-identical to reference mode.

``configure(model, mode="reference")`` makes the same model compute the way the official code
does: per-timestep LIF loop, the references' reshapes and ``.contiguous()`` copies
(`gradprobe.reference_mode`), float16 autocast on CUDA (their ``--amp``), float32 on CPU.

Both modes keep parameters, state dicts and probe hooks; switching back and forth is allowed.

Example:
    >>> from gradprobe.models import create_model
    >>> model = create_model("spikformer_4_384_cifar", downsample="maxpool_lif", T=4)
    >>> plan = configure(model, mode="fast", device="cpu")
    >>> with plan.autocast():
    ...     logits = model(plan.prepare(torch.rand(2, 3, 32, 32)))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from spikingjelly.activation_based import neuron
from torch import nn

from gradprobe.fused_lif import FusedLIFNode, compiler_available
from gradprobe.models.layers import PointwiseBN
from gradprobe.neuron import LoopLIFNode
from gradprobe.reference_mode import install_reference_forwards, remove_reference_forwards

MODES = ("fast", "reference")
Mode = Literal["fast", "reference"]
_LIF_CLASSES = (neuron.LIFNode, LoopLIFNode, FusedLIFNode)


@dataclass(frozen=True)
class StepPlan:
    """How to run a training/eval step of a configured model.

    Attributes:
        mode: ``"fast"`` or ``"reference"``.
        device: Where the model lives.
        amp_dtype: Autocast dtype of forward + loss, or ``None`` for float32.
        lif_kernel: The LIF implementation in use, for logs: ``"fused-inductor"``,
            ``"fused-eager"``, ``"spikingjelly-cuda"`` or ``"loop"``.
        reference_layout: Whether the references' reshapes are mirrored.
        lif_count: Number of LIF modules switched.
    """

    mode: str
    device: torch.device
    amp_dtype: torch.dtype | None
    lif_kernel: str
    reference_layout: bool
    lif_count: int

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward + loss (a no-op in float32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        """float16 autocast needs a ``torch.amp.GradScaler``; bfloat16 and float32 do not."""
        return self.amp_dtype == torch.float16

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the plan's device without a host sync (pin CPU batches upstream)."""
        return x.to(self.device, non_blocking=True)


class _TokenLinear(torch.autograd.Function):
    """``F.linear`` on contiguous tokens ``[M, N, C]``; backward as a oneDNN 1x1 conv backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        M, N, C = x.shape
        out = weight.shape[0]
        # [M, N, C] memory read as a channels-last [M, C, N, 1] map: no copy.
        x4 = x.view(M, N, 1, C).permute(0, 3, 1, 2)
        g4 = grad_y.contiguous().view(M, N, 1, out).permute(0, 3, 1, 2)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias]
        mask[2] = mask[2] and ctx.needs_input_grad[2]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g4, x4, weight[:, :, None, None], [out], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
        )
        gx = gx.permute(0, 2, 3, 1).reshape(M, N, C) if gx is not None else None
        gw = gw.reshape(out, C) if gw is not None else None
        return gx, gw, gb


class FastPointwiseBN(PointwiseBN):
    """`PointwiseBN` whose ``"linear"`` kind runs `_TokenLinear` on CPU (same parameters)."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        proj = self.proj
        if (
            self.kind != "linear"
            or x_seq.device.type != "cpu"
            or x_seq.dtype != torch.float32
            or proj._forward_hooks
            or proj._forward_pre_hooks
            or not torch.is_grad_enabled()
        ):
            return super().forward(x_seq)
        T, B, C, H, W = x_seq.shape
        # [T·B, N, C] tokens: a view when x_seq is channels-last (a FastPointwiseBN output)
        tokens = x_seq.flatten(3).transpose(-1, -2).reshape(T * B, H * W, C)
        y = _TokenLinear.apply(tokens, proj.weight, proj.bias)  # [T·B, N, C']
        # BN on the transposed view, as reference mode (and the official code) normalises it:
        # the same strides take the same kernel, so the statistics round the same way.
        y = y.view(T, B, H * W, -1).transpose(-1, -2)  # [T, B, C', N] view of [T·B, N, C']
        return self.bn(y).reshape(T, B, -1, H, W)


def set_pointwise(model: nn.Module, fast_kind: bool) -> int:
    """Switch every `PointwiseBN` between its own class and `FastPointwiseBN`."""
    target = FastPointwiseBN if fast_kind else PointwiseBN
    count = 0
    for module in model.modules():
        if type(module) in (PointwiseBN, FastPointwiseBN):
            module.__class__ = target
            count += 1
    return count


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_lif_kernel(model: nn.Module, kernel: Literal["fused", "loop", "auto"], **options) -> int:
    """Switch every plain LIF of ``model`` to another kernel class in place.

    The classes share parameters, state and maths, so this only changes how spikes are computed.
    PLIF and other neuron types are left alone.

    Args:
        model: Any module.
        kernel: ``"fused"`` (`FusedLIFNode`), ``"loop"`` (`LoopLIFNode`) or ``"auto"``
            (spikingjelly's ``LIFNode``).
        **options: ``compiled=bool`` for the fused kernel.

    Returns:
        The number of neurons switched.
    """
    target = {"fused": FusedLIFNode, "loop": LoopLIFNode, "auto": neuron.LIFNode}[kernel]
    count = 0
    for module in model.modules():
        if type(module) in _LIF_CLASSES:
            module.__class__ = target
            if target is FusedLIFNode:
                module.compiled = bool(options.get("compiled", False))
            elif "compiled" in module.__dict__:
                del module.compiled
            count += 1
    return count


def configure(
    model: nn.Module,
    mode: Mode = "fast",
    *,
    device: str | torch.device | None = None,
    compile_kernels: bool | Literal["auto"] = "auto",
    amp: bool = True,
) -> StepPlan:
    """Put ``model`` on ``device`` in fast or reference mode and say how to step it.

    Args:
        model: A gradprobe backbone (any module with spikingjelly LIFs works).
        mode: ``"fast"`` or ``"reference"`` (see the module docstring).
        device: Target device; ``None`` picks CUDA when present, else CPU.
        compile_kernels: Fast mode on CPU: build the fused LIF with TorchInductor (about 20 s
            once per process, cached on disk after; it pays within a few training steps).
            ``"auto"`` does so when a C++ compiler is found.
        amp: On CUDA, autocast (bfloat16 in fast mode, float16 in reference mode). Ignored on
            CPU, where both modes run float32.

    Returns:
        The `StepPlan` for the harness: wrap forward + loss in ``plan.autocast()``; use a
        GradScaler when ``plan.needs_grad_scaler``.

    Example:
        >>> from gradprobe.models import create_model
        >>> plan = configure(create_model("sps_tokenizer_cifar"), "reference", device="cpu")
        >>> plan.lif_kernel
        'loop'
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choices: {', '.join(MODES)}")
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    on_cuda = device.type == "cuda"
    if mode == "reference":
        count = set_lif_kernel(model, "loop")
        set_pointwise(model, False)
        layout = install_reference_forwards(model)
        amp_dtype = torch.float16 if (amp and on_cuda) else None
        kernel = "loop"
    else:
        compiled = (
            compiler_available() if compile_kernels == "auto" else bool(compile_kernels)
        ) and not on_cuda
        count = set_lif_kernel(model, "fused", compiled=compiled)
        remove_reference_forwards(model)
        set_pointwise(model, not on_cuda)
        layout = False
        amp_dtype = torch.bfloat16 if (amp and on_cuda) else None
        kernel = (
            "spikingjelly-cuda" if on_cuda else ("fused-inductor" if compiled else "fused-eager")
        )
    return StepPlan(
        mode=mode,
        device=device,
        amp_dtype=amp_dtype,
        lif_kernel=kernel,
        reference_layout=layout,
        lif_count=count,
    )
