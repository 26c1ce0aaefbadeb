"""The CPU fast path's autograd functions: token Linears and convolutions with a faster backward.

The forwards are the float32 ops reference mode runs (``F.linear`` on contiguous tokens,
``aten.convolution``), so they give the same bits; only how the gradients are computed changes:

* `TokenLinear`'s float32 backward is a oneDNN 1x1 convolution backward on the same memory (a
  channels-last view, no copy): PyTorch's CPU ``mm`` is MKL's sgemm, and oneDNN's 1x1
  convolution is up to 1.5x faster on an AVX-512 CPU (``benchmarks/gemm.py``);
* with ``bf16_grads`` (fast mode, not ``exact``, on a CPU with bfloat16 dot products) both take
  bfloat16 operands in their backward (oneDNN accumulates in float32 and rounds the results to
  bfloat16, which are widened to float32), 1.8-3.0x faster than float32
  (``benchmarks/gemm.py``); biases' gradients are summed in float32.

`gradprobe.fast.layers` calls them from the modules that the fast path swaps in.
"""

from __future__ import annotations

import torch


def _grad_result(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.float() if t is not None else None


class TokenLinear(torch.autograd.Function):
    """``F.linear`` on contiguous tokens ``[M, N, C]``. Backward in float32 as a oneDNN 1x1
    convolution backward (up to 1.5x faster than MKL's sgemm); with ``bf16_grads`` as two
    bfloat16 matmuls (oneDNN: float32 accumulation, bfloat16 results widened to float32), which
    beat the bfloat16 convolution by skipping its layout reorders."""

    @staticmethod
    def forward(ctx, x, weight, bias, bf16_grads=False):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.bf16 = bf16_grads
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        M, N, C = x.shape
        out = weight.shape[0]
        bias_grad = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.bf16:
            g2 = grad_y.reshape(M * N, out).to(torch.bfloat16)
            gx = gw = gb = None
            if ctx.needs_input_grad[0]:
                gx = torch.mm(g2, weight.to(torch.bfloat16)).float().view(M, N, C)
            if ctx.needs_input_grad[1]:
                gw = torch.mm(g2.t(), x.reshape(M * N, C).to(torch.bfloat16)).float()
            if bias_grad:  # summed in float32
                gb = grad_y.sum((0, 1))
            return gx, gw, gb, None
        grad_y = grad_y.contiguous()
        # [M, N, C] memory read as a channels-last [M, C, N, 1] map: no copy.
        x4 = x.view(M, N, 1, C).permute(0, 3, 1, 2)
        g4 = grad_y.view(M, N, 1, out).permute(0, 3, 1, 2)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias_grad]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g4, x4, weight[:, :, None, None], [out], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
        )
        gx = gx.permute(0, 2, 3, 1).reshape(M, N, C) if gx is not None else None
        gw = gw.reshape(out, C) if gw is not None else None
        return gx, gw, gb, None


class BF16GradConv(torch.autograd.Function):
    """``aten.convolution`` in float32; backward with bfloat16 operands (oneDNN, float32
    accumulation, bfloat16 results widened to float32), the bias gradient summed in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        zeros = [0] * len(stride)
        return torch.ops.aten.convolution(
            x, weight, bias, stride, padding, dilation, False, zeros, groups
        )

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad_y.to(torch.bfloat16),
            x.to(torch.bfloat16),
            weight.to(torch.bfloat16),
            None,
            stride,
            padding,
            dilation,
            False,
            [0] * len(stride),
            groups,
            mask,
        )
        dims = [0, *range(2, grad_y.dim())]
        gb = grad_y.sum(dims) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return _grad_result(gx), _grad_result(gw), gb, None, None, None, None
