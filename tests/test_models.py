"""Every backbone x every downsampling variant: shapes, backward, state reset, variant isolation,
sites, and the reference parameter counts (spec section 3) to the integer."""

from __future__ import annotations

import dataclasses
import fnmatch

import pytest
import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode

from gradprobe.downsample import DownsampleSite, forward_of, list_downsamples
from gradprobe.models import create_model, list_models
from gradprobe.neuron import NeuronConfig
from gradprobe.probe import find_sites

VARIANTS = list_downsamples()

# Tiny sizes per family: enough for a 2x2 token grid, fast on CPU.
TINY = {
    "spikformer_*_cifar": dict(embed_dim=16, num_heads=2, depth=1, img_size=8),
    "spikformer_*": dict(embed_dim=16, num_heads=2, depth=1, img_size=32),
    "spikingformer_*_cifar": dict(embed_dim=16, num_heads=2, depth=1, img_size=8),
    "spikingformer_*": dict(embed_dim=16, num_heads=2, depth=1, img_size=32),
    "spikeformer_imagenet": dict(embed_dim=16, num_heads=2, depth=1, img_size=32),
    "spikeformer_*": dict(embed_dim=16, num_heads=2, depth=1, img_size=16),
    "spiking_resnet19_cifar": dict(width=4, layers=(2, 2, 1), fc_hidden=8, img_size=8),
    "sps_tokenizer_cifar": dict(embed_dim=16, img_size=8),
}

# Documented downsampling sites, in forward order.
SITES = {
    "spikformer_*_cifar": ["stem.stages.stage3", "stem.stages.stage4"],
    "spikingformer_*_cifar": ["stem.stages.stage3", "stem.stages.stage4"],
    "spikformer_*": [f"stem.stages.stage{i}" for i in (1, 2, 3, 4)],
    "spikingformer_*": [f"stem.stages.stage{i}" for i in (1, 2, 3, 4)],
    "spikeformer_dvs_cifar10": ["tokenizer.0.conv1", "tokenizer.2.conv1", "tokenizer.4.conv1"],
    "spikeformer_dvs_gesture": ["tokenizer.0.conv1", "tokenizer.1.conv1", "tokenizer.2.conv1"],
    "spikeformer_imagenet": [f"tokenizer.{i}.conv1" for i in (0, 2, 4, 6)],
    "spiking_resnet19_cifar": ["layer2.0.conv1", "layer3.0.conv1"],
    "sps_tokenizer_cifar": ["stem.stages.stage3", "stem.stages.stage4"],
}

# (model, num_classes, parameters, of which unused in forward): spec section 3.
REFERENCE_PARAMS = [
    ("spikformer_4_384_cifar", 10, 9_330_874, 6_144),
    ("spikformer_4_384_cifar", 100, 9_365_524, 6_144),
    ("spikformer_4_256_cifar", 10, 4_159_274, 4_096),
    ("spikformer_4_256_cifar", 100, 4_182_404, 4_096),
    ("spikformer_2_384_cifar", 10, 5_768_122, 3_072),
    ("spikformer_2_384_cifar", 100, 5_802_772, 3_072),
    ("spikingformer_4_384_cifar", 10, 9_326_266, 6_144),
    ("spikingformer_4_384_cifar", 100, 9_360_916, 6_144),
    ("spikingformer_4_256_cifar", 10, 4_156_202, 4_096),
    ("spikingformer_4_256_cifar", 100, 4_179_332, 4_096),
    ("spikingformer_2_384_cifar", 10, 5_765_818, 3_072),
    ("spikingformer_2_384_cifar", 100, 5_800_468, 3_072),
    ("spikformer_8_384_imagenet", 1000, 16_828_312, 12_288),
    ("spikformer_8_512_imagenet", 1000, 29_705_768, 16_384),
    ("spikformer_8_768_imagenet", 1000, 66_363_208, 24_576),
    ("spikingformer_8_384_imagenet", 1000, 16_828_312, 12_288),
    ("spikingformer_8_512_imagenet", 1000, 29_705_768, 16_384),
    ("spikingformer_8_768_imagenet", 1000, 66_363_208, 24_576),
    ("spikingformer_2_256_dvs", 10, 2_568_714, 2_048),
    ("spikingformer_2_256_dvs", 11, 2_568_971, 2_048),
    ("spikformer_2_256_dvs", 10, 2_585_610, 18_944),
]

# Not in spec section 3: TET's ResNet-19 layout counted by hand (the paper's "12.63M").
RESNET19_PARAMS = [(10, 12_630_858), (100, 12_653_988)]


def _lookup(table: dict, name: str):
    for pattern, value in table.items():
        if fnmatch.fnmatchcase(name, pattern):
            return value
    raise KeyError(f"no entry for {name}")


def tiny(name: str, downsample: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, downsample=downsample, **{**_lookup(TINY, name), **kwargs})


def tiny_input(model, batch: int = 2) -> torch.Tensor:
    shape = (batch, model.in_channels, model.img_size, model.img_size)
    if model.in_channels == 2:  # event frames [B, T, C, H, W]
        return (torch.rand(batch, model.T, *shape[1:]) < 0.3).float()
    return torch.rand(shape)


def test_registry_lists_every_family() -> None:
    names = list_models()
    assert {"spikeformer_dvs_cifar10", "spikeformer_dvs_gesture", "spikeformer_imagenet"} <= set(
        names
    )
    assert "spiking_resnet19_cifar" in names
    for family in ("spikformer", "spikingformer"):
        for size in (
            "4_256_cifar",
            "2_384_cifar",
            "4_384_cifar",
            "8_384_imagenet",
            "8_512_imagenet",
            "8_768_imagenet",
            "2_256_dvs",
        ):
            assert f"{family}_{size}" in names
    assert list_models("spikingformer*") == [n for n in names if n.startswith("spikingformer")]


@pytest.mark.parametrize("downsample", VARIANTS)
@pytest.mark.parametrize(("name", "num_classes", "params", "unused"), REFERENCE_PARAMS)
def test_reference_parameter_counts(name, num_classes, params, unused, downsample) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, downsample=downsample)
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(p.numel() for _, p in model.unused_parameters()) == unused
    with torch.device("meta"):
        lean = create_model(
            name, num_classes=num_classes, downsample=downsample, legacy_params=False
        )
    assert sum(p.numel() for p in lean.parameters()) == params - unused


@pytest.mark.parametrize("downsample", VARIANTS)
@pytest.mark.parametrize(("num_classes", "params"), RESNET19_PARAMS)
def test_resnet19_parameter_count(num_classes, params, downsample) -> None:
    with torch.device("meta"):
        model = create_model(
            "spiking_resnet19_cifar", num_classes=num_classes, downsample=downsample
        )
    assert sum(p.numel() for p in model.parameters()) == params


def test_native_variant_defaults() -> None:
    for name in list_models():
        expected = (
            "strided_conv" if name.startswith(("spikeformer", "spiking_resnet")) else "lif_maxpool"
        )
        assert create_model(name, **_lookup(TINY, name)).downsample == expected, name


@pytest.mark.parametrize("downsample", VARIANTS)
@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("T", [1, 2])
def test_forward_backward_shape(name, downsample, T) -> None:
    model = tiny(name, downsample, T=T, num_classes=5)
    assert (model.T, model.downsample) == (T, downsample)
    x = tiny_input(model)
    out = model(x)
    assert out.shape == (2, 5)
    assert model.forward_timesteps(x).shape == (T, 2, 5)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("downsample", VARIANTS)
@pytest.mark.parametrize("name", list_models())
def test_two_steps_with_reset(name, downsample) -> None:
    model = tiny(name, downsample, T=2, num_classes=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        functional.reset_net(model)
        torch.nn.functional.cross_entropy(model(tiny_input(model)), torch.tensor([0, 2])).backward()
        opt.step()


@pytest.mark.parametrize("name", list_models())
def test_variant_switch_changes_only_the_sites(name) -> None:
    shapes = {}
    for downsample in VARIANTS:
        model = tiny(name, downsample)
        shapes[downsample] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        sites = model.downsample_sites()
        assert list(sites) == _lookup(SITES, name)
        assert all(type(s).variant == downsample for s in sites.values())
        assert all(isinstance(s, DownsampleSite) for s in sites.values())
    reference = shapes[VARIANTS[0]]
    assert all(s == reference for s in shapes.values())
    # weights move between variants unchanged (strict load)
    tiny(name, "maxpool_lif").load_state_dict(tiny(name, "lif_maxpool").state_dict())


@pytest.mark.parametrize("downsample", VARIANTS)
@pytest.mark.parametrize("name", list_models())
def test_probe_finds_exactly_the_documented_sites(name, downsample) -> None:
    found = find_sites(tiny(name, downsample))
    assert [s.name for s in found] == _lookup(SITES, name)
    assert all(s.variant == downsample for s in found)


def test_spikeformer_resizes_its_temporal_embedding() -> None:
    model = tiny("spikeformer_dvs_gesture", "strided_conv", T=2)
    frames = (torch.rand(2, 3, 2, 16, 16) < 0.3).float()  # 3 frames into a T=2 model
    assert model.forward_timesteps(frames).shape == (3, 2, 11)


@pytest.mark.parametrize("name", list_models("spikformer_*") + list_models("spikingformer_*"))
def test_unused_parameters_get_no_gradient(name) -> None:
    model = tiny(name, "maxpool_lif", T=2)
    model(tiny_input(model)).sum().backward()
    unused = {n for n, _ in model.unused_parameters()}
    assert unused
    for n, p in model.named_parameters():
        assert (p.grad is None) == (n in unused), n


def test_spikingformer_dvs_tau_follows_reference() -> None:
    assert tiny("spikingformer_2_256_dvs", "lif_maxpool").neuron.tau == 1.5
    assert tiny("spikingformer_2_256_dvs", "maxpool_lif").neuron.tau == 1.75
    assert tiny("spikingformer_2_256_dvs", "maxpool_lif", tau=1.5).neuron.tau == 1.5
    assert tiny("spikformer_2_256_dvs", "maxpool_lif").neuron.tau == 2.0


def test_the_tau_in_force_and_its_source_are_printed() -> None:
    def first_line(name, downsample, **kwargs):
        return repr(tiny(name, downsample, **kwargs)).splitlines()[1].strip()

    assert first_line("spikingformer_2_256_dvs", "maxpool_lif") == (
        "form='dvs', downsample='maxpool_lif', T=16, tau=1.75 (CML-Spikingformer DVS reference: "
        "DVS tau follows the variant unless tau= is given)"
    )
    assert "tau=1.5 (Spikingformer DVS reference: DVS tau follows the variant" in first_line(
        "spikingformer_2_256_dvs", "strided_conv"
    )
    assert first_line("spikingformer_2_256_dvs", "maxpool_lif", tau=1.5).endswith(
        "tau=1.5 (set by tau=)"
    )
    assert first_line("spikformer_4_384_cifar", "maxpool_lif", neuron=NeuronConfig(tau=3.0)) == (
        "form='cifar', downsample='maxpool_lif', T=4, tau=3.0 (set by neuron=)"
    )
    assert first_line("spikingformer_4_384_cifar", "maxpool_lif").endswith(
        "tau=2.0 (Spikingformer reference)"
    )


def _settings(model: torch.nn.Module) -> dict[tuple[str, str], object]:
    """Every plain setting of the model by (module, attribute): the numbers, flags, strings and
    `NeuronConfig` fields of each module outside the sites; inside a site only those of its
    spiking neurons (with their surrogates), keyed by site and order, since the site's layers
    are the variant itself."""
    modules = []
    for site_name, site in model.downsample_sites().items():
        nodes = [m for m in site.modules() if isinstance(m, BaseNode)]
        for i, node in enumerate(nodes):
            modules += [(f"{site_name}:lif{i}", node)]
            modules += [(f"{site_name}:lif{i}.{n}", m) for n, m in node.named_children()]
    inside = tuple(f"{name}." for name in model.downsample_sites())
    modules += [
        (name, module)
        for name, module in model.named_modules()
        if name not in model.downsample_sites() and not name.startswith(inside)
    ]
    settings = {}
    for name, module in modules:
        for attr, value in vars(module).items():
            if isinstance(value, NeuronConfig):
                settings.update(
                    ((name, f"{attr}.{k}"), v) for k, v in dataclasses.asdict(value).items()
                )
            elif not attr.startswith("_") and isinstance(value, bool | int | float | str | tuple):
                settings[(name, attr)] = value
    del settings[("", "downsample")]  # the variant's own name
    return settings


def test_the_variant_changes_nothing_but_the_sites_except_spikingformer_dvs_tau() -> None:
    # The README's claim, checked on every backbone: the only setting a variant changes outside
    # its sites is the reference tau of Spikingformer's DVS models (1.5, or CML's 1.75 with
    # maxpool_lif); every LIF of the model, in the sites too, takes it.
    changed = {}
    for name in list_models():
        reference = _settings(tiny(name, "lif_maxpool"))
        for downsample in VARIANTS:
            settings = _settings(tiny(name, downsample))
            assert settings.keys() == reference.keys(), (name, downsample)
            diff = {k: (reference[k], v) for k, v in settings.items() if v != reference[k]}
            if diff:
                changed[(name, downsample)] = diff
    cml_forward = {v for v in VARIANTS if forward_of(v) == "maxpool_lif"}  # and its ablations
    assert set(changed) == {("spikingformer_2_256_dvs", v) for v in cml_forward}
    diff = changed[("spikingformer_2_256_dvs", "maxpool_lif")]
    model = tiny("spikingformer_2_256_dvs", "maxpool_lif")
    lifs = [n for n, m in model.named_modules() if isinstance(m, BaseNode)]
    assert {attr for _, attr in diff} == {"tau", "neuron.tau", "tau_source"}
    assert sum(attr == "tau" for _, attr in diff) == len(lifs)
    assert {v for (_, attr), v in diff.items() if "tau" in attr and attr != "tau_source"} == {
        (1.5, 1.75)
    }
    # holding tau fixed removes the exception
    fixed = [_settings(tiny("spikingformer_2_256_dvs", d, tau=1.5)) for d in VARIANTS]
    assert all(s == fixed[0] for s in fixed)


def test_attention_lif_threshold() -> None:
    model = tiny("spikformer_4_384_cifar", "lif_maxpool", attn_threshold=0.25)
    assert model.blocks[0].attn.attn_lif.v_threshold == 0.25
    assert model.blocks[0].attn.q_lif.v_threshold == 1.0


def test_impossible_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"img_size 100 .* multiple of 16"):
        create_model("spikformer_2_256_dvs", img_size=100)
    model = tiny("spikformer_4_384_cifar", "lif_maxpool")
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 3, 10, 10))
