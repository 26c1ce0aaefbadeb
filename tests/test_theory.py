"""Theory as tests: the paper's landing predictions, eq. (7) and eq. (11), against autograd and
against what the probe records, on random and adversarial inputs, T=1 and T=4.

Sites here have their conv and BN replaced by identities, so x is exactly the input we build.
Inputs are multiples of 1/8 so that every LIF update (tau=2) is exact in float32 and the
independent LIF of `gradprobe.theory` spikes exactly where spikingjelly's does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from gradprobe import theory
from gradprobe.downsample import PoolSpec, build_downsample
from gradprobe.probe import attach_probe


def bare_site(variant: str, pool: PoolSpec | None = None) -> nn.Module:
    site = build_downsample(variant, 1, 1, pool=pool)
    site.conv, site.bn = nn.Identity(), nn.Identity()  # x is the input itself
    return site


def dyadic(*shape: int, low: int = -8, high: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=g).float() / 8


def adversarial(T: int) -> torch.Tensor:
    """[T, 2, 1, 7, 9]: odd sides (padding on every border), overlapping 3x3/s2 windows,
    all-zero regions (no spike), strong regions (several spikes per window), exact ties in x."""
    x = torch.zeros(T, 2, 1, 7, 9)
    x[:, 0, 0, :, 5:] = 2.5  # every position spikes at t=0: several spikes per window
    x[:, 0, 0, 2:5, 1:4] = torch.tensor([[1.0, 3.0, 1.0], [3.0, 0.5, 3.0], [1.0, 3.0, 1.0]])
    x[:, 1] = dyadic(T, 1, 7, 9, low=0, high=4, seed=1) * 4  # few values: many exact ties
    x[1:, 1, 0, 0, :] = torch.tensor([0.0, 2.0] * 4 + [0.0])[:9]  # changes over time
    return x


INPUTS = {
    "random": lambda T: dyadic(T, 2, 1, 6, 6),
    "adversarial": adversarial,
}


def probe_maps(variant: str, x: torch.Tensor, pool: PoolSpec | None = None) -> dict:
    site = bare_site(variant, pool)
    x = x.clone().requires_grad_()
    with attach_probe(site, keep_maps=True) as probe:
        out = site(x * 1)
        (out * torch.linspace(1, 2, out.numel()).view_as(out)).sum().backward()
    (record,) = probe.records
    return {"record": record, "x_grad": x.grad, **record.maps}


@pytest.mark.parametrize(
    "window",
    [
        (torch.tensor([[0, 0, 1], [0, 0, 0], [1, 1, 0]]), 2),
        (torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, 0]]), 0),
        (torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 1]]), 4),
    ],
)
def test_maxpool_over_spikes_routes_to_the_first_maximum(window) -> None:
    spikes, first = window
    h = spikes.float().view(1, 1, 3, 3).requires_grad_()
    F.max_pool2d(h, 3).sum().backward()
    assert h.grad.flatten().nonzero().flatten().tolist() == [first]


def test_maxpool_all_zero_border_window_routes_to_its_first_real_position() -> None:
    h = torch.zeros(1, 1, 4, 4, requires_grad=True)
    y = F.max_pool2d(h, 3, 2, 1)
    for (i, j), first in {(0, 0): 0, (0, 1): 1, (1, 0): 4, (1, 1): 5}.items():
        (g,) = torch.autograd.grad(y[0, 0, i, j], h, retain_graph=True)
        assert g.flatten().nonzero().flatten().tolist() == [first]


def test_theory_lif_matches_spikingjelly_with_carry_over() -> None:
    x = dyadic(6, 2, 3, 5, 5)
    lif = build_downsample("lif_maxpool", 3, 3).lif
    functional.reset_net(lif)
    assert torch.equal(lif(x), theory.lif_spikes(x))


@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("variant", ["lif_maxpool", "maxpool_lif"])
def test_each_window_lands_where_the_paper_says(variant, T) -> None:
    # Autograd, one window at a time: dy[t, w] / dx[t] is non-zero only at the landing.
    x = dyadic(T, 1, 1, 5, 5, seed=T).requires_grad_()
    site = bare_site(variant)
    y = site(x)
    xd = x.detach()
    predicted = (
        theory.first_spike_landing(theory.lif_spikes(xd))  # eq. (7)
        if variant == "lif_maxpool"
        else theory.argmax_landing(xd)  # eq. (11)
    )
    for t in range(T):
        for i in range(y.shape[-2]):
            for j in range(y.shape[-1]):
                (g,) = torch.autograd.grad(y[t, 0, 0, i, j], x, retain_graph=True)
                assert g[t].flatten().nonzero().flatten().tolist() == [predicted[t, 0, 0, i, j]]


@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("variant", ["lif_maxpool", "maxpool_lif"])
def test_probe_matches_theory(variant, inputs, T) -> None:
    x = INPUTS[inputs](T)
    maps = probe_maps(variant, x)
    spikes = theory.lif_spikes(x)
    argmax = theory.argmax_landing(x)
    assert torch.equal(maps["argmax"], argmax)
    if variant == "lif_maxpool":
        assert torch.equal(maps["spikes"], spikes)
        assert torch.equal(maps["landing"], theory.first_spike_landing(spikes))
        # tie = several spikes or none in the window
        counts = F.avg_pool2d(spikes.flatten(0, 1), 3, 2, 1, count_include_pad=True) * 9
        assert torch.equal(maps["tie"], (counts != 1).view_as(maps["tie"]))
    else:
        assert torch.equal(maps["landing"], argmax)
        assert maps["record"].precision.tolist() == [1.0] * T  # CML: exactly 1
    assert torch.equal(maps["grad_x"], maps["x_grad"])  # recorded dL/dx is autograd's


def test_adversarial_input_makes_the_baseline_imprecise() -> None:
    # Guard against a vacuous comparison above: the same inputs must separate the variants.
    x = adversarial(4)
    base = probe_maps("lif_maxpool", x)["record"].precision
    cml = probe_maps("maxpool_lif", x)["record"].precision
    assert (base < 1).all() and (cml == 1).all()


@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avgpool_mass_at_argmax(count_include_pad) -> None:
    x = dyadic(2, 1, 1, 7, 7)
    maps = probe_maps("avgpool_lif", x, PoolSpec(count_include_pad=count_include_pad))
    share = theory.avgpool_share(7, 7)
    assert torch.equal(maps["mass"], share.expand_as(maps["mass"]))
    assert (maps["mass"][..., 1:-1, 1:-1] == 1 / 9).all()  # interior windows: exactly 1/9
    # The share read from autograd, window by window, agrees.
    site = bare_site("avgpool_lif", PoolSpec(count_include_pad=count_include_pad))
    xg = x.clone().requires_grad_()
    pooled = site.pool(xg)
    for i in range(pooled.shape[-2]):
        for j in range(pooled.shape[-1]):
            (g,) = torch.autograd.grad(pooled[0, 0, 0, i, j], xg, retain_graph=True)
            g = g[0, 0, 0].abs().flatten()
            at = maps["argmax"][0, 0, 0, i, j]
            assert (g[at] / g.sum()).item() == pytest.approx(share[i, j].item(), rel=1e-6)
    assert maps["record"].precision.isnan().all()


def test_avgpool_interior_frame_mass_is_one_ninth() -> None:
    record = probe_maps("avgpool_lif", dyadic(2, 1, 1, 7, 7), PoolSpec(padding=0))["record"]
    assert record.mass_at_argmax.tolist() == [1 / 9, 1 / 9]


def test_theory_windows_match_pytorch_geometry() -> None:
    for h, w, k, s, p in [(7, 9, 3, 2, 1), (8, 8, 2, 2, 0), (5, 6, 3, 1, 1)]:
        x = torch.randn(1, 1, h, w)
        _, idx = F.max_pool2d(x, k, s, p, return_indices=True)
        assert theory.window_index(h, w, k, s, p).shape[:2] == idx.shape[-2:]
        assert torch.equal(theory.argmax_landing(x, k, s, p), idx)
