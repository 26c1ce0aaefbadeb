"""The paper's landing predictions, computed from first principles (no pooling kernels).

Everything here is written from the equations, window by window, without ``max_pool2d`` or
autograd, so that tests can hold the probe (which reads the pooling kernels) against it:

* `lif_spikes`: the LIF dynamics, eqs. (3)-(5), with membrane carry-over across timesteps.
* `first_spike_landing`: eq. (7). Max-pool over binary spikes sends a window's gradient to the
  position of its maximum; every spike is a maximum, so the tie rule decides, and PyTorch keeps
  the first maximum in window order (row-major). A window without spikes lands on its first
  real (non-padding) position.
* `argmax_landing`: eq. (11). CML pools x itself, so the gradient lands on the argmax of x
  (first position in window order on exact ties, the same rule).
* `avgpool_share`: an average pool gives every real position of a window the same share of
  the window's gradient, so the share at the argmax is ``1 / n_real``.

Indices are flat positions ``row * W + col`` in the ``H x W`` plane, as ``max_pool2d`` returns.
"""

from __future__ import annotations

import torch


def window_index(
    height: int,
    width: int,
    kernel_size: int = 3,
    stride: int = 2,
    padding: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    """Flat input positions of every window, in window (row-major) order; -1 for padding.

    Args:
        height: Input rows H.
        width: Input columns W.
        kernel_size: Window side k.
        stride: Window stride.
        padding: Implicit padding on every side.
        dilation: Spacing of window taps.

    Returns:
        ``[Ho, Wo, k*k]`` int64, ``Ho = (H + 2p - d(k-1) - 1) // s + 1`` (floor mode).

    Example:
        >>> window_index(4, 4)[0, 0].tolist()
        [-1, -1, -1, -1, 0, 1, -1, 4, 5]
    """
    out_h = (height + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    taps = torch.arange(kernel_size) * dilation
    rows = (torch.arange(out_h) * stride - padding)[:, None] + taps  # [Ho, k]
    cols = (torch.arange(out_w) * stride - padding)[:, None] + taps  # [Wo, k]
    r = rows[:, None, :, None].expand(out_h, out_w, kernel_size, kernel_size)
    c = cols[None, :, None, :].expand(out_h, out_w, kernel_size, kernel_size)
    real = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    flat = torch.where(real, r * width + c, torch.full_like(r, -1))
    return flat.reshape(out_h, out_w, kernel_size * kernel_size)


def _gather_windows(m: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # m [..., H, W] → [..., Ho, Wo, K]; padding taps read position 0 and are masked by callers.
    flat = m.flatten(-2)
    taps = index.clamp(min=0).flatten()
    return flat[..., taps].reshape(*m.shape[:-2], *index.shape)


def _first_where(cond: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # The first tap (in window order) where cond holds, as a flat input position.
    k = index.shape[-1]
    order = torch.arange(k).expand_as(cond)
    first = torch.where(cond, order, torch.full_like(order, k)).min(-1).values
    return torch.gather(index.expand(*cond.shape), -1, first.clamp(max=k - 1)[..., None])[..., 0]


def first_spike_landing(
    spikes: torch.Tensor, kernel_size: int = 3, stride: int = 2, padding: int = 1
) -> torch.Tensor:
    """Eq. (7): where ConvBN-LIF-MaxPool lands each window's gradient in x.

    Args:
        spikes: Binary spike maps ``[..., H, W]``.
        kernel_size: Max-pool window side.
        stride: Max-pool stride.
        padding: Max-pool padding.

    Returns:
        ``[..., Ho, Wo]`` flat positions: the first spiking position of each window in window
        order, or its first real position when it has no spike.

    Example:
        >>> s = torch.zeros(3, 3); s[1, 2] = s[2, 0] = 1
        >>> first_spike_landing(s, 3, 1, 0).item()
        5
    """
    index = window_index(*spikes.shape[-2:], kernel_size, stride, padding)
    real = index >= 0
    spiking = (_gather_windows(spikes, index) == 1) & real
    any_spike = spiking.any(-1)
    return torch.where(
        any_spike, _first_where(spiking, index), _first_where(real.expand_as(spiking), index)
    )


def argmax_landing(
    x: torch.Tensor, kernel_size: int = 3, stride: int = 2, padding: int = 1
) -> torch.Tensor:
    """Eq. (11): where CML lands each window's gradient: the argmax of x over the window.

    Args:
        x: Pre-spike maps ``[..., H, W]``.
        kernel_size: Max-pool window side.
        stride: Max-pool stride.
        padding: Max-pool padding.

    Returns:
        ``[..., Ho, Wo]`` flat positions of the window maximum (first one on exact ties).

    Example:
        >>> argmax_landing(torch.tensor([[0.0, 2.0], [2.0, 1.0]]), 2, 1, 0).item()
        1
    """
    index = window_index(*x.shape[-2:], kernel_size, stride, padding)
    real = index >= 0
    values = _gather_windows(x, index).masked_fill(~real, float("-inf"))
    top = values.max(-1, keepdim=True).values
    return _first_where((values == top) & real, index)


def avgpool_share(
    height: int, width: int, kernel_size: int = 3, stride: int = 2, padding: int = 1
) -> torch.Tensor:
    """Share of each window's routed gradient at its argmax under average pooling.

    Every real position gets ``dL/dy / divisor`` whatever the divisor (``count_include_pad``
    only rescales all of them), so the share is ``1 / n_real``: ``1/k²`` for interior windows.

    Returns:
        ``[Ho, Wo]`` float64 shares.

    Example:
        >>> avgpool_share(5, 5)[1, 1].item() == 1 / 9
        True
    """
    real = window_index(height, width, kernel_size, stride, padding) >= 0
    return 1.0 / real.sum(-1).double()


def lif_spikes(
    x_seq: torch.Tensor,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float = 0.0,
    decay_input: bool = True,
) -> torch.Tensor:
    """Spikes of a hard-reset LIF over ``[T, ...]`` input, eqs. (3)-(5), membrane carried over.

    Example:
        >>> lif_spikes(torch.full((3, 1), 1.5)).flatten().tolist()
        [0.0, 1.0, 0.0]
    """
    v = torch.full_like(x_seq[0], v_reset)
    out = []
    for x in x_seq:
        leak = (v - v_reset) / tau
        h = v + x / tau - leak if decay_input else v + x - leak  # eq. (3)
        s = (h >= v_threshold).to(x.dtype)  # eq. (4)
        v = h * (1 - s) + v_reset * s  # eq. (5)
        out.append(s)
    return torch.stack(out)
