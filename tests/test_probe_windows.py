"""The window analysis without hooks: hand-made maps through `gradprobe.probe.windows`.

Eq. (7): a max-pool over binary spikes lands on the first spike of the window in window order
(PyTorch's first-maximum rule), on the first real position when the window has none. Eq. (11):
a max-pool over x lands on the argmax of x. An average pool gives every real position the same
share, 1 / n_real. The expectations are written out by hand or come from `gradprobe.theory`,
which computes the equations without pooling kernels.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradprobe import theory
from gradprobe.probe.windows import (
    PoolGeometry,
    Windows,
    first_max_indices,
    grad_abs_mean,
    measure_windows,
    no_window_metrics,
    pool_layout,
    real_positions,
    routed_windows,
    spike_rate,
    ties,
    window_metrics,
)

ONE_WINDOW = PoolGeometry("max", (3, 3), (3, 3))  # a 3x3 map is exactly one window
OVERLAPPING = PoolGeometry("max", (3, 3), (2, 2), (1, 1))  # the references' MaxPool2d(3, 2, 1)


def as_map(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None, None]  # [1, 1, H, W]


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(
    ("spikes", "first", "tie"),
    [
        ([[0, 0, 1], [0, 0, 0], [1, 1, 0]], 2, True),  # three spikes: the first in row order
        ([[0, 0, 0], [0, 0, 0], [0, 0, 0]], 0, True),  # no spike: the first position
        ([[0, 0, 0], [0, 1, 0], [0, 0, 0]], 4, False),  # one spike: no choice to make
        ([[0, 0, 0], [0, 0, 0], [0, 0, 1]], 8, False),
    ],
)
def test_maxpool_over_spikes_lands_on_the_first_spike(spikes, first, tie, binary) -> None:
    # eq. (7), whatever x holds: here its argmax is the centre (position 4)
    x = as_map([[0.1, 0.2, 0.3], [0.4, 2.0, 0.5], [0.6, 0.7, 0.8]])
    w = measure_windows(x, ONE_WINDOW, as_map(spikes), binary=binary)
    assert w.landing.item() == first and w.argmax.item() == 4
    assert w.tie.item() is tie  # counted spikes (binary) or first != last maximum: the same
    assert w.hit.item() is (first == 4) and w.share is None


def test_spikes_tie_rule_at_padded_borders() -> None:
    # 4x4 map, MaxPool2d(3, 2, 1): four windows of 4 or 6 real positions, no spike anywhere;
    # each lands on its first real position and ties (several positions share the maximum 0).
    zeros = torch.zeros(1, 1, 4, 4)
    w = measure_windows(torch.randn(1, 1, 4, 4), OVERLAPPING, zeros, binary=True)
    assert w.landing[0, 0].tolist() == [[0, 1], [4, 5]]
    assert w.tie.all()
    # A 1x1 window cannot tie, spike or not.
    single = measure_windows(zeros, PoolGeometry("max", (1, 1), (1, 1)), zeros, binary=True)
    assert not single.tie.any()


def test_spike_landing_matches_eq7_from_first_principles() -> None:
    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(4, 3, 7, 9, generator=g) < 0.3).float()
    x = torch.randn(4, 3, 7, 9, generator=g)
    w = measure_windows(x, OVERLAPPING, spikes, binary=True)
    assert torch.equal(w.landing, theory.first_spike_landing(spikes))
    assert torch.equal(w.argmax, theory.argmax_landing(x))
    counts = nn.functional.avg_pool2d(spikes, 3, 2, 1, count_include_pad=True) * 9
    assert torch.equal(w.tie, counts.round() != 1)  # several spikes, or none
    flip_rule = measure_windows(x, OVERLAPPING, spikes, binary=False).tie
    assert torch.equal(w.tie, flip_rule)  # the spike count and the mirrored pass agree


def test_maxpool_over_x_lands_on_the_argmax() -> None:
    # eq. (11): x is what the pool reads; exact ties of x go to the first maximum
    x = as_map([[0.4, 2.3, -0.6], [2.6, 3.8, 1.1], [-0.9, 2.1, 0.2]])
    w = measure_windows(x, ONE_WINDOW)
    assert w.landing.item() == w.argmax.item() == 4 and w.hit.all() and not w.tie.any()
    tied = measure_windows(as_map([[1.0, 3.0, 0.0], [3.0, 0.5, 3.0], [1.0, 0.0, 1.0]]), ONE_WINDOW)
    assert tied.argmax.item() == 1 and tied.tie.all()


def test_avgpool_shares_the_window_evenly() -> None:
    avg = PoolGeometry("avg", (3, 3), (2, 2), (1, 1))
    w = measure_windows(torch.randn(2, 1, 4, 4), avg)
    assert w.landing is None and w.hit is None
    assert w.share.dtype == torch.float64
    assert w.share.tolist() == [[1 / 4, 1 / 6], [1 / 6, 1 / 9]]
    assert torch.equal(w.share, theory.avgpool_share(4, 4))
    maps = w.maps()
    assert (maps["landing"] == -1).all() and torch.equal(maps["mass"][1, 0], w.share)
    assert real_positions(avg, (4, 4), (2, 2)).tolist() == [[4, 6], [6, 9]]


@pytest.mark.parametrize(
    "geometry",
    [
        OVERLAPPING,
        PoolGeometry("max", (5, 5), (3, 3), (2, 2)),  # no padding mirrors these windows
        PoolGeometry("max", (3, 3), (2, 2), (1, 1), (2, 2)),  # dilated
        PoolGeometry("max", (3, 3), (3, 3), ceil_mode=True),
    ],
)
def test_ties_count_exact_ties(geometry) -> None:
    m = torch.randint(0, 2, (2, 3, 11, 10), generator=torch.Generator().manual_seed(1)).float()
    first = first_max_indices(m, geometry)
    got = ties(m, first, geometry)
    k, s, p, d = (
        v[0] for v in (geometry.kernel_size, geometry.stride, geometry.padding, geometry.dilation)
    )
    expected = torch.zeros_like(got)
    for i in range(got.shape[-2]):
        for j in range(got.shape[-1]):
            rows = [r for r in (i * s - p + a * d for a in range(k)) if 0 <= r < m.shape[-2]]
            cols = [c for c in (j * s - p + b * d for b in range(k)) if 0 <= c < m.shape[-1]]
            window = m[..., rows, :][..., cols].flatten(-2)
            expected[..., i, j] = (window == window.max(-1, keepdim=True).values).sum(-1) > 1
    assert expected.any() and not expected.all()
    assert torch.equal(got, expected)


def test_metrics_count_only_windows_that_route_gradient() -> None:
    # T=2, one sample, one channel, 1x3 windows; t=0 routes windows 0 and 1, t=1 none.
    hit = torch.tensor([True, False, True, True, True, True]).view(2, 1, 1, 3)
    tie = torch.tensor([True, True, False, False, False, False]).view(2, 1, 1, 3)
    windows = Windows(torch.zeros(2, 1, 1, 3, dtype=torch.long), None, tie, hit=hit)
    grad_y = torch.tensor([0.5, -1.0, 0.0, 0.0, 0.0, 0.0]).view(2, 1, 1, 3)
    m = window_metrics(windows, routed_windows(grad_y), T=2)
    assert m.windows.tolist() == [2, 0] and m.windows_total == 3
    assert m.precision[0].item() == 0.5 and m.tie_rate[0].item() == 1.0
    assert torch.allclose(m.mass_at_argmax, m.precision, rtol=0, atol=0, equal_nan=True)
    assert math.isnan(m.precision[1].item()) and math.isnan(m.tie_rate[1].item())
    unreached = window_metrics(windows, None, T=2)  # no gradient reached the pool output
    assert unreached.windows.tolist() == [0, 0] and unreached.precision.isnan().all()


def test_avgpool_mass_weights_each_routed_window_by_its_share() -> None:
    avg = PoolGeometry("avg", (3, 3), (2, 2), (1, 1))
    windows = measure_windows(torch.randn(1, 1, 4, 4), avg)
    routed = torch.tensor([[True, False], [False, True]]).view(1, 1, 2, 2)
    m = window_metrics(windows, routed, T=1)
    assert m.precision.isnan().all() and m.mass_at_argmax.dtype == torch.float64
    assert m.mass_at_argmax.item() == pytest.approx((1 / 4 + 1 / 9) / 2)


def test_windowless_site_and_per_timestep_means() -> None:
    m = no_window_metrics(3, torch.device("cpu"))
    assert m.precision.isnan().all() and m.windows.tolist() == [0, 0, 0] and m.windows_total == 0
    spikes = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1]).view(2, 1, 1, 2, 2)  # [T, B, C, H, W]
    assert spike_rate(spikes, 2).tolist() == [0.25, 1.0]
    assert grad_abs_mean(-spikes * 2, 2).tolist() == [0.5, 2.0]


def test_geometry_of_pool_modules_and_layout() -> None:
    assert PoolGeometry.of(nn.MaxPool2d(3, 2, 1)) == OVERLAPPING
    avg = PoolGeometry.of(nn.AvgPool2d(2, ceil_mode=True))
    assert avg == PoolGeometry("avg", (2, 2), (2, 2), ceil_mode=True) and not avg.is_max
    seq = torch.randn(2, 3, 4, 5, 6)  # [T, B, C, H, W]
    flat = pool_layout(seq)
    assert flat.shape == (6, 4, 5, 6) and flat.is_contiguous(memory_format=torch.channels_last)
    again = pool_layout(flat)  # already laid out: a view, no copy
    assert again.data_ptr() == flat.data_ptr() and again.stride() == flat.stride()
    assert torch.equal(flat, seq.flatten(0, 1))
