"""Pooling windows as geometry, and max-pools whose backward follows a rule of its own.

Two things live here because both the variants (`gradprobe.downsample`) and the probe
(`gradprobe.probe.windows`) need them and neither may import the other's package:

* the geometry of a 2-D pool's windows (`PoolGeometry`, `window_taps`, `real_positions`,
  `first_max_indices`, `max_counts`), as pure tensor functions;
* `RoutedMaxPool2d`, the pool of the causal ablations: its forward is PyTorch's max-pool of the
  map it reads, bit for bit, and its backward routes each window's gradient by a stated rule
  instead of PyTorch's (the first maximum of that same map):

  ``"guide"``
      to the first maximum, in window order, of a second map of the same shape, the *guide*
      (``forward(seen, guide)``): the argmax of x for ``lif_maxpool_argmax``, the first spike of
      a shadow LIF for ``maxpool_lif_firstspike``;
  ``"split"``
      in equal shares to every position attaining the window's maximum (no tie is broken):
      ``lif_maxpool_split``.

`pool_routing` is how the probe asks any pool where its backward sends a window's gradient: a
`RoutedMaxPool2d` answers with its rule, PyTorch's own pools with theirs.

Maps are ``[N, C, H, W]``; per-window results ``[N, C, Ho, Wo]``, with indices the flat
positions ``row * W + col`` that ``max_pool2d`` returns.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Pair = tuple[int, int]


def _pair(v: int | tuple[int, ...]) -> Pair:
    return (v, v) if isinstance(v, int) else tuple(v)


@dataclass(frozen=True)
class PoolGeometry:
    """What a 2-D pool does to a map: its kind and its window geometry.

    Attributes:
        kind: ``"max"`` or ``"avg"``.
        kernel_size, stride, padding, dilation: Per axis (H, W).
        ceil_mode: PyTorch's ceil mode of the output size.
    """

    kind: str
    kernel_size: Pair
    stride: Pair
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False

    @classmethod
    def of(cls, pool: nn.Module) -> PoolGeometry:
        """The geometry of an ``nn.MaxPool2d`` or ``nn.AvgPool2d`` (or a subclass).

        Example:
            >>> PoolGeometry.of(nn.MaxPool2d(3, 2, 1)).stride
            (2, 2)
        """
        stride = pool.stride if pool.stride is not None else pool.kernel_size
        return cls(
            "max" if isinstance(pool, nn.MaxPool2d) else "avg",
            _pair(pool.kernel_size),
            _pair(stride),
            _pair(pool.padding),
            _pair(getattr(pool, "dilation", 1)),
            pool.ceil_mode,
        )

    @property
    def is_max(self) -> bool:
        return self.kind == "max"


def first_max_indices(m: torch.Tensor, geometry: PoolGeometry) -> torch.Tensor:
    """Per window, the flat index of its first maximum in window (row-major) order: where a
    max-pool's backward sends the window's gradient (PyTorch's tie rule)."""
    k, s, p, d = geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation
    return F.max_pool2d(m, k, s, p, d, ceil_mode=geometry.ceil_mode, return_indices=True)[1]


def _tap_ranges(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> list[tuple[slice, slice]]:
    """Per kernel tap along one axis: (output windows whose tap is inside the map, input slice)."""
    ranges = []
    for a in range(k):
        offset = a * d - p  # input index of the tap in window i is i * s + offset
        first = max(0, (s - 1 - offset) // s)
        last = min(n_out, (n_in - 1 - offset) // s + 1)
        if last <= first:
            ranges.append((slice(0, 0), slice(0, 0)))
            continue
        start = first * s + offset
        ranges.append((slice(first, last), slice(start, start + (last - first - 1) * s + 1, s)))
    return ranges


@functools.lru_cache(maxsize=64)
def window_taps(geometry: PoolGeometry, in_hw: Pair, out_hw: Pair) -> tuple[list, torch.Tensor]:
    """Every window tap as (output rows, output cols, input rows, input cols) slices, and the
    number of real (non-padding) positions per window ``[Ho, Wo]``. Padding is never built."""
    k, s, p, d = geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation
    rows = _tap_ranges(in_hw[0], out_hw[0], k[0], s[0], p[0], d[0])
    cols = _tap_ranges(in_hw[1], out_hw[1], k[1], s[1], p[1], d[1])
    taps = [(ro, co, ri, ci) for ro, ri in rows for co, ci in cols]
    real_rows = torch.zeros(out_hw[0], dtype=torch.float64)
    real_cols = torch.zeros(out_hw[1], dtype=torch.float64)
    for ro, _ in rows:
        real_rows[ro] += 1
    for co, _ in cols:
        real_cols[co] += 1
    return taps, real_rows[:, None] * real_cols[None, :]


def real_positions(geometry: PoolGeometry, in_hw: Pair, out_hw: Pair) -> torch.Tensor:
    """Real (non-padding) positions per window, ``float64 [Ho, Wo]`` on the CPU.

    Example:
        >>> real_positions(PoolGeometry("avg", (3, 3), (2, 2), (1, 1)), (4, 4), (2, 2)).tolist()
        [[4.0, 6.0], [6.0, 9.0]]
    """
    return window_taps(geometry, in_hw, out_hw)[1]


def max_counts(m: torch.Tensor, top: torch.Tensor, geometry: PoolGeometry) -> torch.Tensor:
    """Per window, how many of its real positions hold its maximum ``top`` (``max_pool2d`` of
    ``m``), ``int16 [N, C, Ho, Wo]``: tap by tap, exact, padding never built."""
    taps, _ = window_taps(geometry, tuple(m.shape[-2:]), tuple(top.shape[-2:]))
    count = torch.zeros(top.shape, dtype=torch.int16, device=top.device)
    equal = torch.empty(top.shape, dtype=torch.bool, device=top.device)
    for ro, co, ri, ci in taps:
        torch.eq(m[..., ri, ci], top[..., ro, co], out=equal[..., ro, co])
        count[..., ro, co] += equal[..., ro, co]
    return count


def _max_pool(m: torch.Tensor, geometry: PoolGeometry, indices: bool = False) -> Any:
    k, s, p, d = geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation
    return F.max_pool2d(m, k, s, p, d, ceil_mode=geometry.ceil_mode, return_indices=indices)


class _GuidedMaxPool(torch.autograd.Function):
    """Values: max-pool of ``seen``; gradient: to the first maximum of ``guide`` per window."""

    @staticmethod
    def forward(ctx: Any, seen: torch.Tensor, guide: torch.Tensor, geometry: PoolGeometry):
        out = _max_pool(seen, geometry)
        ctx.save_for_backward(first_max_indices(guide, geometry))
        ctx.in_shape = seen.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        n, c, h, w = ctx.in_shape
        flat = grad.new_zeros(n, c, h * w)
        flat.scatter_add_(2, index.flatten(2), grad.contiguous().flatten(2))
        return flat.view(n, c, h, w), None, None


class _SplitMaxPool(torch.autograd.Function):
    """Values: max-pool of ``seen``; gradient: equal shares over each window's maxima."""

    @staticmethod
    def forward(ctx: Any, seen: torch.Tensor, geometry: PoolGeometry):
        out = _max_pool(seen, geometry)
        ctx.save_for_backward(seen, out)
        ctx.geometry = geometry
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        seen, top = ctx.saved_tensors
        share = grad / max_counts(seen, top, ctx.geometry).to(grad.dtype)
        taps, _ = window_taps(ctx.geometry, tuple(seen.shape[-2:]), tuple(top.shape[-2:]))
        out = torch.zeros_like(seen, dtype=grad.dtype)
        for ro, co, ri, ci in taps:
            at_max = seen[..., ri, ci] == top[..., ro, co]
            out[..., ri, ci] += torch.where(at_max, share[..., ro, co], 0)
        return out, None


ROUTING_RULES = ("guide", "split")


class RoutedMaxPool2d(nn.MaxPool2d):
    """A multi-step max-pool whose backward routes each window's gradient by ``rule``.

    Args:
        kernel_size, stride, padding: As ``nn.MaxPool2d`` (dilation 1, floor mode).
        rule: ``"guide"`` (to the first maximum of the guide map) or ``"split"`` (equal shares
            over the window's maxima); see the module docstring.

    Example:
        >>> pool = RoutedMaxPool2d(2, 2, 0, rule="guide")
        >>> spikes = torch.tensor([[[[[1.0, 1.0], [0.0, 0.0]]]]], requires_grad=True)
        >>> x = torch.tensor([[[[[0.5, 0.9], [0.1, 0.2]]]]])
        >>> pool(spikes, x).sum().backward()  # the max is the spikes'; x decides where
        >>> spikes.grad.flatten().tolist()
        [0.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, kernel_size: int, stride: int, padding: int = 0, *, rule: str) -> None:
        if rule not in ROUTING_RULES:
            raise ValueError(f"unknown routing rule {rule!r}; choices: {', '.join(ROUTING_RULES)}")
        super().__init__(kernel_size, stride, padding)
        self.rule = rule
        self.step_mode = "m"

    def forward(self, seen: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        if (guide is None) != (self.rule == "split"):
            raise ValueError(
                f"rule {self.rule!r} pools with {'no' if guide is None else 'a'} guide"
            )
        geometry = PoolGeometry.of(self)
        flat = seen.flatten(0, -4)
        if self.rule == "guide":
            out = _GuidedMaxPool.apply(flat, guide.detach().flatten(0, -4), geometry)
        else:
            out = _SplitMaxPool.apply(flat, geometry)
        return out.view(*seen.shape[:-3], *out.shape[-3:])

    def routing(self, seen: torch.Tensor, guide: torch.Tensor | None = None):
        """Where backward sends each window's gradient (see `pool_routing`)."""
        return ("first_max", guide) if self.rule == "guide" else ("split", seen)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rule={self.rule!r}"


def pool_routing(pool: nn.Module, inputs: tuple) -> tuple[str, torch.Tensor]:
    """Where ``pool``'s backward sends each window's gradient, for its call on ``inputs``.

    Returns:
        ``(rule, m)``: ``"first_max"``: to the first maximum of ``m`` in window order (PyTorch's
        max-pools: ``m`` is the map they pool); ``"split"``: in equal shares to the positions
        attaining the window's maximum of ``m``; ``"spread"``: over every position (average
        pools). A pool with a ``routing`` method (`RoutedMaxPool2d`) answers for itself.

    Example:
        >>> m = torch.rand(1, 1, 4, 4)
        >>> pool_routing(nn.MaxPool2d(2), (m,))[0]
        'first_max'
    """
    own = getattr(pool, "routing", None)
    if own is not None:
        return own(*inputs)
    return ("first_max" if isinstance(pool, nn.MaxPool2d) else "spread"), inputs[0]
