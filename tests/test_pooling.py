"""`gradprobe.pooling`: routed max-pools keep PyTorch's forward and route by their own rule."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradprobe.pooling import PoolGeometry, RoutedMaxPool2d, max_counts, pool_routing
from gradprobe.probe.windows import measure_windows, window_metrics

GEOMETRIES = [(2, 2, 0), (3, 2, 1)]


def spikes(*shape, seed=0, rate=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < rate).float()


@pytest.mark.parametrize(("k", "s", "p"), GEOMETRIES)
@pytest.mark.parametrize("rule", ["guide", "split"])
def test_the_forward_is_pytorchs_max_pool_bit_for_bit(k, s, p, rule):
    seen = torch.randn(3, 2, 4, 9, 9)
    guide = torch.randn(3, 2, 4, 9, 9) if rule == "guide" else None
    out = RoutedMaxPool2d(k, s, p, rule=rule)(seen, guide)
    assert torch.equal(
        out, F.max_pool2d(seen.flatten(0, 1), k, s, p).view(3, 2, 4, *out.shape[-2:])
    )


@pytest.mark.parametrize(("k", "s", "p"), GEOMETRIES)
def test_guided_by_its_own_map_it_is_pytorchs_backward(k, s, p):
    m = spikes(2, 3, 4, 8, 8).requires_grad_()
    g = torch.randn(2, 3, 4, *F.max_pool2d(m[0], k, s, p).shape[-2:])
    (theirs,) = torch.autograd.grad(F.max_pool2d(m.flatten(0, 1), k, s, p).view_as(g), m, g)
    (ours,) = torch.autograd.grad(RoutedMaxPool2d(k, s, p, rule="guide")(m, m), m, g)
    assert torch.equal(ours, theirs)  # ties included: both keep the first maximum


def test_the_guide_decides_where_each_window_lands():
    seen = torch.zeros(1, 1, 1, 2, 4, requires_grad=True)  # no spike: every position ties
    guide = torch.tensor([[[[[0.1, 0.2, 0.9, 0.0], [0.3, 0.4, 0.5, 0.6]]]]])
    RoutedMaxPool2d(2, 2, 0, rule="guide")(seen, guide).sum().backward()
    assert seen.grad.flatten().tolist() == [0, 0, 1, 0, 0, 1, 0, 0]  # argmaxes 3 and 2 of guide


def test_split_shares_a_window_equally_over_its_maxima():
    seen = torch.tensor([[[[[1.0, 0, 1, 1], [1, 0, 1, 1]]]]], requires_grad=True)
    RoutedMaxPool2d(2, 2, 0, rule="split")(seen).sum().backward()
    assert seen.grad.flatten().tolist() == [0.5, 0, 0.25, 0.25, 0.5, 0, 0.25, 0.25]
    zero = torch.zeros(1, 1, 1, 3, 3, requires_grad=True)
    RoutedMaxPool2d(3, 2, 1, rule="split")(zero).sum().backward()  # windows of 4 real places
    assert zero.grad[0, 0, 0].tolist() == [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]


def test_split_gives_every_window_its_whole_gradient():
    m = spikes(2, 3, 4, 9, 9, seed=3).requires_grad_()
    out = RoutedMaxPool2d(3, 2, 1, rule="split")(m)
    out.sum().backward()
    assert torch.allclose(m.grad.sum(), torch.tensor(float(out.numel())))


def test_max_counts_counts_the_real_positions_at_the_maximum():
    m = torch.tensor([[[[1.0, 1, 0], [0, 1, 0], [0, 0, 0]]]])
    geometry = PoolGeometry("max", (3, 3), (2, 2), (1, 1))
    top = F.max_pool2d(m, 3, 2, 1)
    assert max_counts(m, top, geometry).tolist() == [[[[3, 2], [1, 1]]]]


def test_pool_routing_names_each_pools_rule():
    m, guide = torch.rand(1, 1, 1, 4, 4), torch.rand(1, 1, 1, 4, 4)
    assert pool_routing(nn.MaxPool2d(2), (m,)) == ("first_max", m)
    assert pool_routing(nn.AvgPool2d(2), (m,))[0] == "spread"
    assert pool_routing(RoutedMaxPool2d(2, 2, rule="guide"), (m, guide)) == ("first_max", guide)
    assert pool_routing(RoutedMaxPool2d(2, 2, rule="split"), (m,)) == ("split", m)


def test_a_bad_rule_or_a_missing_guide_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown routing rule 'last'; choices: guide, split"):
        RoutedMaxPool2d(2, 2, rule="last")
    with pytest.raises(ValueError, match="rule 'guide' pools with no guide"):
        RoutedMaxPool2d(2, 2, rule="guide")(torch.rand(1, 1, 1, 4, 4))


def test_the_window_analysis_of_a_split_is_its_share_at_the_argmax_of_x():
    seen = torch.tensor([[[[1.0, 0, 1, 1], [1, 0, 1, 1]]]])
    x = torch.tensor([[[[0.5, 0.1, 0.2, 0.3], [0.9, 0.0, 0.4, 0.1]]]])  # argmaxes 4 and 6
    geometry = PoolGeometry("max", (2, 2), (2, 2))
    w = measure_windows(x, geometry, seen, split=True)
    assert w.landing is None and w.mass.tolist() == [[[[0.5, 0.25]]]]
    metrics = window_metrics(w, torch.ones(1, 1, 1, 2, dtype=torch.bool), T=1)
    assert metrics.precision.isnan().all() and metrics.mass_at_argmax.tolist() == [0.375]
    assert metrics.tie_rate.tolist() == [1.0]
