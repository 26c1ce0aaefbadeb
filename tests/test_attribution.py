"""captum attributions at the sites agree with the probe's raw gradients."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn

from gradprobe.attribution import SpikingForward, site_attribution
from gradprobe.models import create_model
from gradprobe.probe import attach_probe, find_sites


def tiny(variant: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model("sps_tokenizer_cifar", downsample=variant, T=2, embed_dim=16, img_size=8)


def probe_grads(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict:
    """dL/dx per site for L = sum over the batch of the T-averaged target logit."""
    with attach_probe(model, keep_maps=True) as probe:
        SpikingForward(model)(x).gather(1, target[:, None]).sum().backward()
    model.zero_grad(set_to_none=True)
    return {r.site: r.maps for r in probe.records}


@pytest.mark.parametrize("variant", ["lif_maxpool", "maxpool_lif", "strided_conv"])
def test_layer_gradient_equals_probe_gradient(variant) -> None:
    model = tiny(variant)
    x, target = torch.rand(3, 3, 8, 8), torch.tensor([1, 4, 7])
    recorded = probe_grads(model, x, target)
    for site in find_sites(model):
        per_t = site_attribution(model, site, x, target, average_over_time=False)
        assert torch.allclose(per_t, recorded[site.name]["grad_x"], rtol=0, atol=1e-7)
        mean = site_attribution(model, site.name, x, target)
        assert torch.allclose(mean, per_t.mean(0), rtol=0, atol=1e-7)
        gxa = site_attribution(model, site, x, target, multiply_by_activation=True)
        expected = (recorded[site.name]["grad_x"] * recorded[site.name]["x"]).mean(0)
        assert torch.allclose(gxa, expected, rtol=1e-5, atol=1e-7)


def test_wrapper_resets_state_between_calls() -> None:
    model = tiny("maxpool_lif")
    x = torch.rand(2, 3, 8, 8)
    f = SpikingForward(model)
    first = f(x)
    assert torch.equal(f(x), first)  # without the reset the membranes would carry over
    functional.reset_net(model)
    model(x)
    assert not torch.equal(model(x), first)


def test_seq_to_ann_layer_output_is_reshaped_to_time_major() -> None:
    from spikingjelly.activation_based.model.spikformer import Spikformer

    torch.manual_seed(0)  # spikformer_cifar10's layout at a tiny width
    model = Spikformer(
        T=2,
        img_size_h=32,
        img_size_w=32,
        patch_size=4,
        num_classes=10,
        embed_dims=32,
        num_heads=2,
        depths=1,
    )
    x, target = torch.rand(2, 3, 32, 32), torch.tensor([3, 5])
    recorded = probe_grads(model, x, target)
    site = find_sites(model)[0]
    per_t = site_attribution(model, site, x, target, average_over_time=False)
    assert per_t.shape == (2, 2, 16, 32, 32)  # [T*B, ...] → [T, B, ...]
    assert torch.allclose(per_t, recorded[site.name]["grad_x"], rtol=0, atol=1e-7)
