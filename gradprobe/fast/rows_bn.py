"""Token BatchNorm over contiguous rows, bit for bit what ATen computes on the transposed view.

Spikformer's CIFAR tokens sit in memory as ``[T·B, N, C]`` rows, and the reference code
normalises them with ``BatchNorm1d`` on the transposed ``[T·B, C, N]`` view. For such a strided
input ATen's CPU kernel takes the mean with ``at::mean`` over the view, sums each channel's
squared deviations serially in float64, and normalises elementwise as
``((x - mean) * invstd) * weight + bias``; forward and backward together are 6-9x slower than
BatchNorm on the contiguous rows, whose own kernel rounds the statistics differently (and so
flips the odd spike near threshold). `rows_batch_norm` computes the same statistics the same
way: the mean with the same ``at::mean`` call on the same view, the float64 sum of squares as
one serial pass over the rows (a single-threaded TorchInductor kernel, vectorised across
channels), the normalisation as the same float32 operations in one pass. Its output, saved
statistics and running statistics are therefore the transposed kernel's bit for bit
(``tests/test_rows_bn.py`` checks all three, in training and eval). The backward is ATen's
BatchNorm backward on the rows, which sums in float32 where the transposed one sums in float64
(within float32's bound for those sums).

It needs TorchInductor (a C++ compiler): without one, `available` is false and callers keep
the transposed kernel.
"""

from __future__ import annotations

import torch
from torch import nn

from gradprobe.fast.kernels import KernelSet


def _var_sum(rows: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``[R, C]``, ``[C]`` → per-channel float64 sum of squared deviations, summed in row order."""
    deviation = rows.double() - mean.double()
    return (deviation * deviation).sum(0)


def _normalise(rows, mean, invstd, weight, bias):
    return (rows - mean) * invstd * weight + bias


# The sum of squares must run in row order like ATen's: with several threads and few channels
# TorchInductor would split it across threads, so that kernel is built single-threaded (it is
# bound by memory). Static shapes: one kernel per (rows, channels).
_KERNELS = KernelSet(
    "rows BatchNorm",
    "callers go back to ATen's kernel on the transposed view",
    {"var_sum": _var_sum, "normalise": _normalise},
    options={"var_sum": {"cpp.threads": 1}},
    build_time="~3 s the first time on a machine, under 1 s from its disk cache",
)


def available() -> bool:
    """Whether the compiled kernels can be used here (a C++ compiler, no failed build)."""
    return _KERNELS.available()


class _RowsBNFunction(torch.autograd.Function):
    """Normalise rows with given statistics; ATen's BatchNorm backward on the rows."""

    @staticmethod
    def forward(ctx, rows, weight, bias, mean, invstd, eps, train):
        y = _KERNELS("normalise", rows, mean, invstd, weight, bias)
        ctx.save_for_backward(rows, weight, mean, invstd)
        ctx.eps, ctx.train = eps, train
        return y

    @staticmethod
    def backward(ctx, grad_y):
        rows, weight, mean, invstd = ctx.saved_tensors
        if not ctx.train:  # statistics are constants: a per-channel affine map
            scale = invstd * weight
            grad_w = (grad_y * (rows - mean) * invstd).sum(0) if ctx.needs_input_grad[1] else None
            grad_b = grad_y.sum(0) if ctx.needs_input_grad[2] else None
            return grad_y * scale, grad_w, grad_b, None, None, None, None
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_y.contiguous(), rows, weight, None, None, mean, invstd, True, ctx.eps, mask
        )
        return grad_x, grad_w, grad_b, None, None, None, None


def rows_batch_norm(bn: nn.BatchNorm1d, rows: torch.Tensor, samples: int) -> torch.Tensor:
    """``bn`` applied to float32 token rows ``[samples·N, C]`` as it would be to their
    transposed view ``[samples, C, N]``: the same output, bit for bit, and the same running
    statistics, training or eval, at about the cost of BatchNorm on the rows.

    Args:
        bn: An affine BatchNorm (``torch.nn.BatchNorm1d`` or spikingjelly's) over C channels.
        rows: Contiguous float32 ``[samples·N, C]`` (token ``n`` of sample ``s`` in row
            ``s·N + n``).
        samples: The leading size of the transposed view (``T·B`` for Spikformer's tokens).

    Returns:
        The normalised rows, ``[samples·N, C]``.

    Example:
        >>> bn = torch.nn.BatchNorm1d(8)
        >>> rows = torch.randn(6 * 5, 8)
        >>> y = rows_batch_norm(bn, rows, samples=6)  # doctest: +SKIP
    """
    C = rows.shape[1]
    batch_stats = bn.training or bn.running_mean is None
    with torch.no_grad():
        if batch_stats:
            view = rows.view(samples, -1, C).transpose(1, 2)  # the references' layout
            mean = torch.mean(view, (0, 2))
            var_sum = _KERNELS("var_sum", rows, mean)
            # in float64, ATen's accumulate type for float32, then rounded to float32
            invstd = (1 / torch.sqrt(var_sum / rows.shape[0] + bn.eps)).float()
        else:
            mean = bn.running_mean
            invstd = 1 / torch.sqrt(bn.running_var + bn.eps)
    y = _RowsBNFunction.apply(rows, bn.weight, bn.bias, mean, invstd, bn.eps, batch_stats)
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.running_mean is not None:
            # nn.BatchNorm's factor; ATen's update, in float64 as there
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            with torch.no_grad():
                unbiased = var_sum / (rows.shape[0] - 1)
                bn.running_mean.copy_(
                    factor * mean.double() + (1 - factor) * bn.running_mean.double()
                )
                bn.running_var.copy_(factor * unbiased + (1 - factor) * bn.running_var.double())
    return y
