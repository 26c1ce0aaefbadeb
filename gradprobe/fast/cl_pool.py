"""2-D max-pooling on CPU through channels-last memory: the same output, indices and gradient.

On an NCHW-contiguous CPU tensor, ATen's max-pool runs one scalar loop per output element with a
branch per window position: on real-valued maps (CML pools the BatchNorm output) the branches
mispredict. Its channels-last kernel compares whole channel vectors without branches. ATen's
own NCHW → channels-last copy is a slow strided copy, so `max_pool2d` moves the map with
TorchInductor kernels (tiled, vectorised transposes), pools with ATen's channels-last kernel and
returns NCHW-contiguous output. The backward is ATen's max-pool backward on the NCHW
gradient with NCHW indices, as the plain call's. Forward and backward of Spikformer's 32x32
``MaxPool2d(3, 2, 1)`` at B·T = 64 on two cores: 58 → 25 ms on real values, 36 → 20 ms on spikes
(``python -m benchmarks.gemm``).

Exactness: both ATen kernels visit each window in the same order and keep the first maximum
(``val > max or isnan(val)``), so values and indices equal the plain call's bit for bit, the
first-index tie rule of binary spikes included; the backward is the same kernel on the same
indices (``tests/test_cl_pool.py`` checks all three). Without TorchInductor (no C++ compiler)
the plain call runs.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional, layer

from gradprobe.fast.kernels import KernelSet
from gradprobe.fast.swap import replaces


def _to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def _to_contiguous(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.contiguous() for t in tensors)


_KERNELS = KernelSet(
    "channels-last max-pool",
    "max-pools run ATen's NCHW kernel",
    {"to_channels_last": _to_channels_last, "to_contiguous": _to_contiguous},
    dynamic=True,
    build_time="~5 s the first time on a machine, under 1 s from its disk cache",
)


def available() -> bool:
    """Whether `max_pool2d` takes the channels-last route here (TorchInductor can build)."""
    return _KERNELS.available()


class _MaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        geometry = (kernel_size, stride, padding, dilation, ceil_mode)
        y, indices = torch.ops.aten.max_pool2d_with_indices(
            _KERNELS("to_channels_last", x), *geometry
        )
        y, indices = _KERNELS("to_contiguous", y, indices)
        ctx.save_for_backward(x, indices)
        ctx.geometry = geometry
        ctx.mark_non_differentiable(indices)
        ctx.set_materialize_grads(False)  # no zeros for the indices' (absent) gradient
        return y, indices

    @staticmethod
    def backward(ctx, grad_y, _grad_indices):
        if grad_y is None:
            return None, None, None, None, None, None
        x, indices = ctx.saved_tensors
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_y.contiguous(), x, *ctx.geometry, indices
        )
        return grad_x, None, None, None, None, None


def _pair(value) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


def max_pool2d(
    x: torch.Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """``torch.nn.functional.max_pool2d``, through channels-last memory for NCHW CPU maps.

    Takes the channels-last route for a 4-D NCHW-contiguous float tensor on CPU when
    TorchInductor is available; anything else is the plain call. Same arguments and results.
    """
    if not (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.is_floating_point()
        and x.is_contiguous()
        and not x.is_contiguous(memory_format=torch.channels_last)  # already fast there
        and available()
    ):
        return torch.nn.functional.max_pool2d(
            x, kernel_size, stride, padding, dilation, ceil_mode, return_indices
        )
    kernel = _pair(kernel_size)
    geometry = (kernel, _pair(stride) if stride else kernel, _pair(padding), _pair(dilation))
    if torch.is_grad_enabled() and x.requires_grad:
        y, indices = _MaxPool.apply(x, *geometry, ceil_mode)
    else:
        y, indices = torch.ops.aten.max_pool2d_with_indices(
            _KERNELS("to_channels_last", x), *geometry, ceil_mode
        )
        if return_indices:
            y, indices = _KERNELS("to_contiguous", y, indices)
        else:
            (y,) = _KERNELS("to_contiguous", y)
    return (y, indices) if return_indices else y


@replaces(layer.MaxPool2d)
class FastMaxPool2d(layer.MaxPool2d):
    """spikingjelly's ``MaxPool2d`` (either step mode) pooling through `max_pool2d`."""

    def _pool(self, x: torch.Tensor):
        return max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.return_indices,
        )

    def forward(self, x: torch.Tensor):
        if self.step_mode == "s":
            return self._pool(x)
        if x.dim() != 5:
            raise ValueError(f"expected x with shape [T, N, C, H, W], but got shape {x.shape}")
        return functional.seq_to_ann_forward(x, (self._pool,))
