"""The four variants: shapes, layer order, parameter identity, errors, registration."""

import pytest
import torch
from spikingjelly.activation_based import functional

from gradprobe import labels
from gradprobe.downsample import (
    DOWNSAMPLES,
    ConvBNLIF,
    DownsampleSite,
    PoolSpec,
    StridedConvLIF,
    build_downsample,
    list_downsamples,
    register_downsample,
)
from gradprobe.labels import BUILTIN_ORDER, sort_variants, variant_label
from gradprobe.neuron import NeuronConfig
from gradprobe.registry import UnknownNameError

VARIANTS = ["avgpool_lif", "lif_maxpool", "maxpool_lif", "strided_conv"]


def test_registry_lists_the_four_variants():
    assert set(VARIANTS) <= set(list_downsamples()) and sorted(BUILTIN_ORDER) == VARIANTS
    assert list_downsamples("*_lif") == ["avgpool_lif", "maxpool_lif"]


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("T", [1, 4])
def test_shape_forward_backward(name, T):
    site = build_downsample(name, 3, 8)
    x = torch.rand(T, 2, 3, 16, 12, requires_grad=True)
    y = site(x)
    assert y.shape == (T, 2, 8, 8, 6)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    functional.reset_net(site)


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_share_parameter_names_and_shapes(name):
    ref = {k: v.shape for k, v in build_downsample("lif_maxpool", 4, 8).state_dict().items()}
    got = {k: v.shape for k, v in build_downsample(name, 4, 8).state_dict().items()}
    assert got == ref


def _order(site: DownsampleSite, x: torch.Tensor) -> list[str]:
    calls = []
    for part in ("conv", "bn", "pool", "lif"):
        module = getattr(site, part)
        if module is not None:
            module.register_forward_hook(lambda m, i, o, part=part: calls.append(part))
    site(x)
    return calls


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("lif_maxpool", ["conv", "bn", "lif", "pool"]),
        ("maxpool_lif", ["conv", "bn", "pool", "lif"]),
        ("avgpool_lif", ["conv", "bn", "pool", "lif"]),
        ("strided_conv", ["conv", "bn", "lif"]),
    ],
)
def test_layer_order_matches_the_paper(name, order):
    site = build_downsample(name, 2, 4)
    assert _order(site, torch.rand(2, 1, 2, 8, 8)) == order


def test_pool_kinds_and_geometry():
    spec = PoolSpec(kernel_size=2, stride=2, padding=0)
    assert isinstance(build_downsample("lif_maxpool", 2, 2, pool=spec).pool, torch.nn.MaxPool2d)
    avg = build_downsample("avgpool_lif", 2, 2, pool=spec).pool
    assert isinstance(avg, torch.nn.AvgPool2d) and avg.count_include_pad is False
    assert build_downsample("strided_conv", 2, 2, pool=spec).conv.stride == (2, 2)
    assert build_downsample("maxpool_lif", 2, 2).conv.stride == (1, 1)
    y = build_downsample("maxpool_lif", 2, 2, pool=spec)(torch.rand(1, 1, 2, 8, 8))
    assert y.shape[-2:] == (4, 4)


def test_lif_maxpool_pools_spikes_and_cml_pools_x():
    """CML's LIF sees the pooled map (1/4 of the neurons); the baseline's sees the full map."""
    x = torch.rand(2, 1, 2, 8, 8)
    seen = {}
    for name in ("lif_maxpool", "maxpool_lif"):
        site = build_downsample(name, 2, 3)
        site.lif.register_forward_hook(lambda m, i, o, name=name: seen.update({name: i[0].shape}))
        site(x)
    assert seen["lif_maxpool"][-2:] == (8, 8)
    assert seen["maxpool_lif"][-2:] == (4, 4)


def test_neuron_config_reaches_the_site():
    site = build_downsample("maxpool_lif", 2, 2, neuron=NeuronConfig(tau=1.5, v_threshold=0.5))
    assert site.lif.tau == 1.5 and site.lif.v_threshold == 0.5


def test_unknown_variant_names_the_choices():
    choices = ", ".join(list_downsamples())
    assert choices.startswith("avgpool_lif, lif_maxpool, ")
    with pytest.raises(
        UnknownNameError, match=f"unknown downsampling variant 'cml'; choices: {choices}$"
    ):
        build_downsample("cml", 2, 2)


def test_input_must_be_a_sequence():
    with pytest.raises(ValueError, match=r"\[T, B, C, H, W\]; got shape \(2, 3, 8, 8\)"):
        build_downsample("maxpool_lif", 3, 4)(torch.rand(2, 3, 8, 8))


def test_bad_pool_geometry_is_rejected():
    with pytest.raises(ValueError, match="padding"):
        PoolSpec(kernel_size=3, stride=2, padding=2)


def test_registering_a_fifth_variant_is_one_decorated_function(monkeypatch):
    monkeypatch.setattr(DOWNSAMPLES, "_entries", dict(DOWNSAMPLES._entries))
    monkeypatch.setattr(labels, "LABELS", dict(labels.LABELS))

    @register_downsample("lif_maxpool_k2_test", label="ConvBN-LIF-MaxPool(2x2)")
    def lif_maxpool_k2(in_channels, out_channels, kernel_size=3, *, neuron=None, pool=None):
        return build_downsample(
            "lif_maxpool",
            in_channels,
            out_channels,
            kernel_size,
            neuron=neuron,
            pool=PoolSpec(2, 2, 0),
        )

    assert "lif_maxpool_k2_test" in list_downsamples()
    y = build_downsample("lif_maxpool_k2_test", 2, 2)(torch.rand(1, 1, 2, 8, 8))
    assert y.shape == (1, 1, 2, 4, 4)
    # its label is in the one table, and it is shown after the paper's four
    assert variant_label("lif_maxpool_k2_test") == "ConvBN-LIF-MaxPool(2x2)"
    others = sorted(set(list_downsamples()) - set(BUILTIN_ORDER))
    assert "lif_maxpool_k2_test" in others
    assert sort_variants(list_downsamples()) == [*BUILTIN_ORDER, *others]
    with pytest.raises(ValueError, match="already registered"):
        register_downsample("lif_maxpool_k2_test", label="another")(lif_maxpool_k2)
    assert variant_label("lif_maxpool_k2_test") == "ConvBN-LIF-MaxPool(2x2)"


def test_a_variant_registered_without_a_label_is_shown_by_its_name(monkeypatch):
    monkeypatch.setattr(DOWNSAMPLES, "_entries", dict(DOWNSAMPLES._entries))
    register_downsample("plain_test")(StridedConvLIF)
    assert variant_label("plain_test") == "plain_test"
    assert "plain_test" not in labels.LABELS


def test_plain_unit_keeps_the_size():
    unit = ConvBNLIF(3, 5)
    assert unit(torch.rand(2, 1, 3, 6, 6)).shape == (2, 1, 5, 6, 6)
