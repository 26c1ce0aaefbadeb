"""``maxpool_lif_firstspike``: CML's forward, each window's gradient to the baseline's landing."""

import pytest
import torch
from routing_check import (
    GEOMETRIES,
    first_max,
    forward_is_twins,
    pool_input_grad,
    precision,
    routed,
    site_pass,
)
from spikingjelly.activation_based import functional

from gradprobe import fast
from gradprobe.downsample import build_downsample

VARIANT, FORWARD, BASELINE = "maxpool_lif_firstspike", "maxpool_lif", "lif_maxpool"


@pytest.mark.parametrize("spec", GEOMETRIES)
def test_its_forward_is_cmls_bit_for_bit(spec):
    assert forward_is_twins(VARIANT, FORWARD, spec)


@pytest.mark.parametrize("spec", GEOMETRIES)
def test_each_window_lands_where_the_baseline_lands_on_the_same_x(spec):
    _, got, _ = site_pass(VARIANT, spec)
    _, baseline, _ = site_pass(BASELINE, spec)  # same weights, same batch: the same x
    x = got["x"].detach()
    assert torch.equal(x, baseline["x"].detach())
    first_spikes = baseline["spikes"].detach().flatten(0, 1)  # the baseline's LIF on this x
    expected = routed(got["y"].grad.flatten(0, 1), first_spikes, spec, "first_max")
    assert torch.allclose(pool_input_grad(got), expected, rtol=0, atol=1e-6)
    assert not torch.equal(first_max(first_spikes, spec), first_max(x.flatten(0, 1), spec))


@pytest.mark.parametrize("spec", GEOMETRIES)
def test_the_probe_reports_the_baselines_precision_on_the_same_x(spec):
    images = torch.randn(3, 2, 2, 9, 9, generator=torch.Generator().manual_seed(5)) * 2
    mine, baselines = precision(VARIANT, spec, images), precision(BASELINE, spec, images)
    assert mine == baselines and min(mine) < 1.0


def test_the_shadow_is_no_part_of_the_site():
    torch.manual_seed(0)
    site = build_downsample(VARIANT, 2, 4)
    site(torch.rand(2, 1, 2, 8, 8))
    assert "_shadow" in vars(site) and all("shadow" not in n for n, _ in site.named_modules())
    assert site.state_dict().keys() == build_downsample(FORWARD, 2, 4).state_dict().keys()


def test_on_the_fast_path_the_shadow_spikes_as_the_fast_baseline():
    spikes = {}
    for variant in (VARIANT, BASELINE):
        torch.manual_seed(0)
        site = build_downsample(variant, 2, 4)
        fast.configure(site, mode="fast", device="cpu")
        if variant == VARIANT:  # the guide the pool routes by: the shadow's spikes
            site.pool.register_forward_pre_hook(lambda m, args: spikes.update(mine=args[1]))
        else:
            site.lif.register_forward_hook(lambda m, args, out: spikes.update(theirs=out))
        site(torch.randn(3, 2, 2, 9, 9, generator=torch.Generator().manual_seed(1)) * 2)
        functional.reset_net(site)
    assert type(site.lif).__name__ == "FusedLIFNode"
    assert spikes["mine"].sum() > 0 and torch.equal(spikes["mine"], spikes["theirs"])
