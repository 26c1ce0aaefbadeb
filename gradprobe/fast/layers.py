"""The module classes the CPU fast path swaps in (`gradprobe.fast.swap`): same parameters, same
forward bits as the model's own, a faster step.

* `FastConv2d`/`FastConv1d`: spikingjelly convolutions whose training backward on CPU takes
  bfloat16 operands (`gradprobe.fast.autograd.BF16GradConv`); swapped in only where the plan's
  gradient operands are bfloat16 (fast mode, not ``exact``, a CPU with bfloat16 dot products).
* `FastPointwiseBN`: `gradprobe.models.layers.PointwiseBN` whose ``"linear"`` kind (Spikformer
  CIFAR's token Linears) reads the ``[T·B, N, C]`` token memory without a copy, computes the
  Linear with `gradprobe.fast.autograd.TokenLinear` and the BatchNorm over contiguous rows
  (`gradprobe.fast.rows_bn`), with reference mode's output bits.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import layer
from torch import nn

from gradprobe.fast import rows_bn
from gradprobe.fast.autograd import BF16GradConv, TokenLinear
from gradprobe.fast.swap import replaces
from gradprobe.models.layers import PointwiseBN


class _FastConvMixin:
    """``_conv_forward`` through `BF16GradConv` for float32 training steps on CPU."""

    def _conv_forward(self, input, weight, bias):
        if (
            input.device.type != "cpu"
            or input.dtype != torch.float32
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
            or not torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu")
        ):
            return super()._conv_forward(input, weight, bias)
        return BF16GradConv.apply(
            input,
            weight,
            bias,
            list(self.stride),
            list(self.padding),
            list(self.dilation),
            self.groups,
        )


@replaces(layer.Conv2d)
class FastConv2d(_FastConvMixin, layer.Conv2d):
    """spikingjelly ``Conv2d`` with bfloat16-operand gradients on CPU (see `BF16GradConv`)."""


@replaces(layer.Conv1d)
class FastConv1d(_FastConvMixin, layer.Conv1d):
    """spikingjelly ``Conv1d`` with bfloat16-operand gradients on CPU (see `BF16GradConv`)."""


#: The convolutions the fast path swaps in where gradient operands are bfloat16.
FAST_CONVS = {layer.Conv2d: FastConv2d, layer.Conv1d: FastConv1d}


@replaces(PointwiseBN, options=("exact", "bf16_grads", "compiled"))
class FastPointwiseBN(PointwiseBN):
    """`PointwiseBN` whose ``"linear"`` kind (Spikformer CIFAR's tokens) runs fast on CPU.

    Same parameters and maths as `PointwiseBN`. The Linear runs on the ``[T·B, N, C]`` token
    memory (a view of channels-last maps, no copy) with the backward of `TokenLinear`; under
    CPU autocast it is oneDNN's bfloat16 matmul. The
    BatchNorm runs on the contiguous ``[T·B·N, C']`` rows with
    `gradprobe.fast.rows_bn.rows_batch_norm`, whose output is reference mode's (BN on the transposed
    view) bit for bit, 4x faster. ``exact`` (class attribute or per instance) keeps reference
    mode's own BatchNorm kernel and float32 backward instead; so does the absence of
    TorchInductor (``compiled`` false). Under CPU autocast BN runs on the rows with ATen's
    kernel (bfloat16 is not held to reference mode's bits anyway).
    """

    exact: bool = True
    bf16_grads: bool = False
    compiled: bool = False

    def extra_repr(self) -> str:
        flags = ("exact", "bf16_grads", "compiled")
        return ", ".join(f"{name}={getattr(self, name)}" for name in flags)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        proj, bn = self.proj, self.bn
        autocast = torch.is_autocast_enabled("cpu")
        grad = torch.is_grad_enabled()
        if (
            self.kind != "linear"
            or x_seq.device.type != "cpu"
            or not (x_seq.dtype == torch.float32 or (x_seq.dtype == torch.bfloat16 and autocast))
            or proj._forward_hooks
            or proj._forward_pre_hooks
        ):
            return super().forward(x_seq)
        T, B, C, H, W = x_seq.shape
        # [T·B, N, C] tokens: a view when x_seq is channels-last (a FastPointwiseBN output)
        tokens = x_seq.flatten(3).transpose(-1, -2).reshape(T * B, H * W, C)
        if grad and not autocast:
            y = TokenLinear.apply(tokens, proj.weight, proj.bias, self.bf16_grads)
        else:
            y = torch.nn.functional.linear(tokens, proj.weight, proj.bias)
        rows = y.view(-1, y.shape[-1])  # [T·B·N, C']
        if not (bn._forward_hooks or bn._forward_pre_hooks):
            if autocast:
                y = nn.BatchNorm1d.forward(bn, rows)
            elif not self.exact and self.compiled and bn.affine and rows_bn.available():
                y = rows_bn.rows_batch_norm(bn, rows, samples=T * B)
            else:
                y = None
            if y is not None:  # rows back to [T, B, C', H, W] (channels-last memory)
                return y.view(T, B, H * W, -1).transpose(-1, -2).reshape(T, B, -1, H, W)
        # BN on the transposed view, as reference mode (and the official code) normalises it:
        # the same strides take the same kernel, so the statistics round the same way.
        y = rows.view(T, B, H * W, -1).transpose(-1, -2)  # [T, B, C', N] view of [T·B, N, C']
        return bn(y).reshape(T, B, -1, H, W)
