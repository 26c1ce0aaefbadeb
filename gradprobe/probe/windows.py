"""Window analysis: where each pooling window lands its gradient, as pure tensor functions.

This is the one place where eqs. (7) and (11) of the CML paper are measured. Given the
pre-spike map x, the map the pool reads (x itself, or the neuron's spikes), the pool's
geometry and, after backward, which windows received a gradient, these functions compute every
metric a probe records (definitions in `gradprobe.probe`). They keep no state and install no
hooks: `gradprobe.probe.hooks` catches the tensors and calls them, and tests call them on
hand-made tensors.

Everything runs on PyTorch's pooling kernels, vectorised over windows. A window's first
maximum is the index ``max_pool2d`` returns (the position its backward routes to); its last
maximum is the first one of the map flipped in H and W, so an exact tie is a window where the
two differ. Maps are flattened to ``[N, C, H, W]`` (``N = T * B`` for multi-step maps); per-window
results are ``[N, C, Ho, Wo]``, with indices the flat positions ``row * W + col`` that
``max_pool2d`` returns.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradprobe.pooling import (  # noqa: F401  (PoolGeometry and first_max_indices: re-exported)
    Pair,
    PoolGeometry,
    first_max_indices,
    max_counts,
    real_positions,
    window_taps,
)


def flatten_maps(t: torch.Tensor) -> torch.Tensor:
    """``[..., C, H, W]`` as ``[N, C, H, W]``: time steps and samples in one batch dimension."""
    return t.reshape(-1, *t.shape[-3:])


def per_timestep(t: torch.Tensor, T: int) -> torch.Tensor:
    """``[T * ..., ...]`` as ``[T, -1]``: one row per time step."""
    return t.reshape(T, -1)


def pool_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` flattened to ``[N, C, H, W]``, channels-last on CPU (PyTorch's CPU pooling kernels
    are several times faster on it); a no-op on a map already laid out so."""
    t = flatten_maps(t)
    return t.contiguous(memory_format=torch.channels_last) if t.device.type == "cpu" else t


def spike_counts(spikes: torch.Tensor, geometry: PoolGeometry) -> torch.Tensor:
    """Spikes per window (a sum pool; padding adds nothing)."""
    k, s, p = geometry.kernel_size, geometry.stride, geometry.padding
    return F.avg_pool2d(
        spikes, k, s, p, ceil_mode=geometry.ceil_mode, count_include_pad=True, divisor_override=1
    )


def _pool_out(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    # PyTorch's pooling_output_shape
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    return out - 1 if ceil and (out - 1) * s >= n + p else out


@functools.lru_cache(maxsize=64)
def _mirrored(geometry: PoolGeometry, in_hw: Pair, out_hw: Pair) -> tuple[Pair, bool] | None:
    """Padding and ceil mode under which max-pooling the map flipped in H and W visits the
    windows of ``geometry`` mirrored: the same real positions, in reverse order. ``None`` where
    no symmetric padding gives them."""
    k, s, p, d = geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation
    # window i starts at i*s - p; mirrored, window (n_out - 1 - i) must start at the same place
    pad = tuple(
        (o - 1) * s[a] - (n - 1) - p[a] + (k[a] - 1) * d[a]
        for a, (n, o) in enumerate(zip(in_hw, out_hw, strict=True))
    )
    if not all(0 <= pad[a] <= k[a] // 2 for a in range(2)):
        return None
    for ceil in (False, True):
        if all(_pool_out(in_hw[a], k[a], s[a], pad[a], d[a], ceil) == out_hw[a] for a in range(2)):
            return pad, ceil
    return None


def ties(m: torch.Tensor, first: torch.Tensor, geometry: PoolGeometry) -> torch.Tensor:
    """Windows whose maximum is attained at more than one position of ``m``.

    Args:
        m: ``[N, C, H, W]``.
        first: `first_max_indices` of ``m``: each window's first maximum in window order.
        geometry: The windows.

    Returns:
        ``bool [N, C, Ho, Wo]``. The last maximum is the first one over ``m`` flipped in H and
        W, so a tie is a window whose first and last maxima differ: two max-pool passes, exact,
        no per-tap temporaries (slice by slice where no padding mirrors the windows).
    """
    k, s, d = geometry.kernel_size, geometry.stride, geometry.dilation
    h, w = m.shape[-2:]
    mirrored = _mirrored(geometry, (h, w), tuple(first.shape[-2:]))
    if mirrored is None:
        return _tap_ties(m, first, geometry)
    pad, ceil = mirrored
    _, last = F.max_pool2d(m.flip(-2, -1), k, s, pad, d, ceil_mode=ceil, return_indices=True)
    # index i of the flipped map is h*w - 1 - i in m
    return last.flip(-2, -1).add_(first) != h * w - 1


def _tap_ties(m: torch.Tensor, first: torch.Tensor, geometry: PoolGeometry) -> torch.Tensor:
    """`ties` for geometries `_mirrored` cannot express: count equal taps, slice by slice."""
    values = m.flatten(-2).gather(-1, first.flatten(-2)).view(first.shape)
    return max_counts(m, values, geometry) > 1


@dataclass(frozen=True)
class Windows:
    """Per pooling window ``[N, C, Ho, Wo]``, what the forward pass decides about its gradient.

    Attributes:
        argmax: Flat index of the window's first maximum of x.
        landing: Where the pool's backward sends the window's gradient (first maximum of the
            map the pool reads); ``None`` for average pools, which spread it.
        tie: The maximum of the map the pool reads is attained more than once (for average
            pools: the maximum of x).
        hit: ``landing == argmax`` (max pools), else ``None``.
        share: Average pools: share of a window's gradient at each real position, ``float64
            [Ho, Wo]`` (``1 / n_real``), else ``None``.
        mass: Pools that split a window's gradient over its maxima: the share at the argmax of
            x, per window, ``float64`` (``1 / count`` where x's argmax holds the maximum of the
            map pooled, else 0); ``None`` otherwise.
    """

    argmax: torch.Tensor
    landing: torch.Tensor | None
    tie: torch.Tensor
    hit: torch.Tensor | None = None
    share: torch.Tensor | None = None
    mass: torch.Tensor | None = None

    def maps(self) -> dict[str, torch.Tensor]:
        """``landing`` (-1 without a single landing), ``argmax``, ``tie``, and ``mass``: the
        share of the window's gradient at its argmax of x (float64)."""
        landing = self.landing if self.landing is not None else torch.full_like(self.argmax, -1)
        if self.hit is not None:
            mass = self.hit.double()
        else:
            mass = self.mass if self.mass is not None else self.share.expand_as(self.argmax)
        return {"landing": landing, "argmax": self.argmax, "tie": self.tie, "mass": mass}


def measure_windows(
    x: torch.Tensor,
    geometry: PoolGeometry,
    pooled: torch.Tensor | None = None,
    *,
    binary: bool = False,
    split: bool = False,
) -> Windows:
    """Landing, argmax of x and ties of every window of one pool call.

    Args:
        x: The pre-spike map ``[..., C, H, W]``.
        geometry: The pool's windows.
        pooled: What a max-pool reads when that is not x (the spikes of ConvBN-LIF-MaxPool:
            it lands on their first maximum, eq. (7)); ``None`` where it reads x itself, so it
            lands on the argmax of x, eq. (11). Average pools land everywhere: ignored.
        binary: ``pooled`` holds exactly 0 and 1 (a Heaviside neuron's spikes): a tie is then
            several spikes in the window, or none in a window of two or more positions.
        split: The max-pool splits each window's gradient in equal shares over the positions
            holding its maximum of ``pooled`` (or of x) instead of landing on one
            (`gradprobe.pooling.RoutedMaxPool2d`): no landing, precision NaN, and the mass at
            the argmax of x is its share.

    Returns:
        The `Windows` of the call.

    Example:
        >>> spikes = torch.tensor([[[[0.0, 0, 1], [0, 0, 0], [1, 1, 0]]]])  # first spike: 2
        >>> x = torch.tensor([[[[0.1, 0.2, 1.5], [0.3, 0.4, 0.5], [1.2, 1.9, 0.6]]]])
        >>> w = measure_windows(x, PoolGeometry("max", (3, 3), (3, 3)), spikes, binary=True)
        >>> w.landing.item(), w.argmax.item(), w.tie.item(), w.hit.item()
        (2, 7, True, False)
    """
    x = pool_layout(x)
    argmax = first_max_indices(x, geometry)  # first index on exact ties, as the pool's backward
    if split and geometry.is_max:
        return _split_windows(x, argmax, geometry, x if pooled is None else pool_layout(pooled))
    hit = share = None
    if geometry.is_max and pooled is not None:  # eq. (7): the pool routes to its maximum there
        seen = pool_layout(pooled)
        landing = first_max_indices(seen, geometry)
        hit = landing == argmax
    else:  # eq. (11): a max-pool over x routes to the argmax of x; avg-pools everywhere
        seen, landing = x, argmax if geometry.is_max else None
    n_real = real_positions(geometry, tuple(x.shape[-2:]), tuple(argmax.shape[-2:]))
    if geometry.is_max and binary and geometry.dilation == (1, 1):
        count = spike_counts(seen, geometry)
        tie = (count > 1) | ((count == 0) & (n_real > 1).to(count.device))
    else:
        tie = ties(seen, argmax if landing is None else landing, geometry)
    if geometry.is_max and pooled is None:
        hit = torch.ones(argmax.shape, dtype=torch.bool, device=argmax.device)
    elif not geometry.is_max:
        share = (1.0 / n_real).to(argmax.device)  # float64: 1/9 stays 1/9
    return Windows(argmax, landing, tie, hit, share)


def _split_windows(
    x: torch.Tensor, argmax: torch.Tensor, geometry: PoolGeometry, seen: torch.Tensor
) -> Windows:
    """`measure_windows` of a max-pool that splits each window's gradient over its maxima."""
    top = F.max_pool2d(
        seen,
        geometry.kernel_size,
        geometry.stride,
        geometry.padding,
        geometry.dilation,
        ceil_mode=geometry.ceil_mode,
    )
    count = max_counts(seen, top, geometry)
    at_argmax = seen.flatten(-2).gather(-1, argmax.flatten(-2)).view(top.shape) == top
    mass = at_argmax.double() / count.double()
    return Windows(argmax, None, count > 1, mass=mass)


@dataclass(frozen=True)
class WindowMetrics:
    """Per time step ``[T]``, over the windows that routed a non-zero gradient.

    Attributes:
        precision, mass_at_argmax, tie_rate: As defined in `gradprobe.probe`; NaN where no
            window routed a gradient (and precision NaN for average pools).
        windows: Windows that routed a gradient, int64.
        windows_total: Windows per time step.
    """

    precision: torch.Tensor
    mass_at_argmax: torch.Tensor
    tie_rate: torch.Tensor
    windows: torch.Tensor
    windows_total: int


def routed_windows(grad_y: torch.Tensor) -> torch.Tensor:
    """Windows that route a gradient: ``dL/dy != 0`` at the pool output, ``bool [N, C, Ho, Wo]``."""
    return flatten_maps(grad_y) != 0


def window_metrics(windows: Windows, routed: torch.Tensor | None, T: int) -> WindowMetrics:
    """Precision, mass at the argmax and tie rate per time step of one pool call.

    Args:
        windows: `measure_windows` of the call.
        routed: `routed_windows` of its output gradient; ``None``: no gradient reached it.
        T: Time steps in the call (the leading ``N = T * B`` of the maps).

    Returns:
        The call's `WindowMetrics`. Windows that routed nothing are left out of every mean: they
        train nothing, so they cannot route it imprecisely.

    Example:
        >>> w = Windows(torch.tensor([[[[4, 4]]]]), torch.tensor([[[[4, 1]]]]),
        ...             torch.tensor([[[[False, True]]]]), hit=torch.tensor([[[[True, False]]]]))
        >>> window_metrics(w, torch.tensor([[[[True, True]]]]), T=1).precision.tolist()
        [0.5]
    """
    routed = routed if routed is not None else torch.zeros_like(windows.tie)
    routed = per_timestep(routed, T)
    count = routed.sum(1)
    denom = count.clamp(min=1).float()
    empty = count == 0
    nan = torch.full((T,), math.nan, device=routed.device)  # float32, whatever dtype x has
    tie_rate = (per_timestep(windows.tie, T) & routed).sum(1) / denom
    if windows.hit is not None:
        precision = (per_timestep(windows.hit, T) & routed).sum(1) / denom
        mass = precision
    elif windows.mass is not None:  # split over the maxima: no landing, a share per window
        precision = nan
        mass = (per_timestep(windows.mass, T) * routed).sum(1) / denom
    else:
        precision = nan
        # the share depends on the window's place only: count routed windows per place
        per_place = routed.reshape(T, -1, windows.share.numel()).sum(1)
        mass = (per_place.double() * windows.share.flatten()).sum(1) / denom
    precision, mass, tie_rate = (torch.where(empty, nan, v) for v in (precision, mass, tie_rate))
    return WindowMetrics(precision, mass, tie_rate, count, routed.shape[1])


def no_window_metrics(T: int, device: torch.device) -> WindowMetrics:
    """The metrics of a site without a pool (a strided conv): NaN, no window."""
    nan = torch.full((T,), math.nan, device=device)
    return WindowMetrics(nan, nan, nan, torch.zeros(T, dtype=torch.long, device=device), 0)


def spike_rate(spikes: torch.Tensor, T: int) -> torch.Tensor:
    """Mean neuron output per time step, ``float32 [T]``."""
    return per_timestep(spikes, T).float().mean(1)


def grad_abs_mean(grad: torch.Tensor, T: int) -> torch.Tensor:
    """Mean ``|dL/dx|`` per time step, ``float32 [T]`` (accumulated in float32)."""
    return torch.linalg.vector_norm(per_timestep(grad, T), 1, dim=1, dtype=torch.float32) / (
        grad.numel() // T
    )
