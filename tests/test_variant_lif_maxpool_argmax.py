"""``lif_maxpool_argmax``: the baseline's forward, each window's gradient to the argmax of x."""

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

VARIANT, FORWARD = "lif_maxpool_argmax", "lif_maxpool"


@pytest.mark.parametrize("spec", GEOMETRIES)
def test_its_forward_is_the_baselines_bit_for_bit(spec):
    assert forward_is_twins(VARIANT, FORWARD, spec)


@pytest.mark.parametrize("spec", GEOMETRIES)
def test_each_window_lands_on_the_argmax_of_x(spec):
    _, got, _ = site_pass(VARIANT, spec)
    x = got["x"].detach().double().flatten(0, 1)
    grad_y = got["y"].grad.flatten(0, 1)
    expected = routed(grad_y, x, spec, "first_max")
    assert torch.allclose(pool_input_grad(got), expected, rtol=0, atol=1e-6)
    # and not where the baseline lands (the first spike) on this batch
    spikes = got["spikes"].detach().flatten(0, 1)
    assert not torch.equal(first_max(spikes, spec), first_max(x, spec))


@pytest.mark.parametrize("spec", GEOMETRIES)
def test_the_probe_reports_a_precision_of_exactly_one(spec):
    images = torch.randn(3, 2, 2, 9, 9, generator=torch.Generator().manual_seed(5)) * 2
    assert precision(VARIANT, spec, images) == [1.0, 1.0, 1.0]
    assert min(precision(FORWARD, spec, images)) < 1.0
