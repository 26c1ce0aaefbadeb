"""Site discovery: our sites by type and by name, foreign spikingjelly models by pattern, and
foreign sites that module order matched wrongly, dropped once their dataflow is seen."""

from __future__ import annotations

import warnings

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from gradprobe import theory
from gradprobe.models import create_model
from gradprobe.probe import attach_probe, find_sites


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_spikingjelly_spikformer_cifar10_sites_are_found_and_reported() -> None:
    from spikingjelly.activation_based.model.spikformer import spikformer_cifar10

    torch.manual_seed(0)
    model = spikformer_cifar10(T=2)  # unmodified: stem Conv-BN-MaxPool inside SeqToANNContainer
    sites = find_sites(model)
    assert [s.name for s in sites] == ["patch_embed.stages.2", "patch_embed.stages.3"]
    saved = {}

    def keep_x(module, args, out):
        out.retain_grad()
        saved["x"] = out

    sites[0].bn.register_forward_hook(keep_x)
    with attach_probe(model, keep_maps=True) as probe:
        model(torch.rand(1, 3, 32, 32)).mean(0).sum().backward()
    frame = probe.to_frame()
    assert list(frame["site"]) == ["patch_embed.stages.2"] * 2 + ["patch_embed.stages.3"] * 2
    assert set(frame["variant"]) == {"maxpool_lif"}  # the spikingjelly stem is CML-ordered
    assert frame["precision"].tolist() == [1.0] * 4
    assert (frame["windows"] == frame["windows_total"]).all()
    (record,) = [r for r in probe.records if r.site == "patch_embed.stages.2"]
    assert record.maps["x"].shape == (2, 1, 192, 32, 32)  # [T*B] reshaped to [T, B]
    assert torch.equal(record.maps["argmax"], theory.argmax_landing(record.maps["x"]))
    assert torch.equal(record.maps["grad_x"].flatten(0, 1), saved["x"].grad)


class ForeignLIFFirst(nn.Module):
    """Foreign layouts of ConvBN-LIF-MaxPool: multi-step with Conv-BN and the pool in
    spikingjelly's SeqToANNContainer, or plain single-step modules called once per timestep."""

    def __init__(self, step_mode: str) -> None:
        super().__init__()
        conv_bn = (nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
        multi = step_mode == "m"
        self.features = layer.SeqToANNContainer(*conv_bn) if multi else nn.Sequential(*conv_bn)
        self.lif = neuron.LIFNode(step_mode=step_mode)
        self.pool = (
            layer.SeqToANNContainer(nn.MaxPool2d(3, 2, 1)) if multi else nn.MaxPool2d(3, 2, 1)
        )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.lif.step_mode == "m":
            return self.pool(self.lif(self.features(x_seq)))
        return torch.stack([self.pool(self.lif(self.features(x))) for x in x_seq])


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_foreign_lif_first_site_matches_eq7(step_mode) -> None:
    torch.manual_seed(0)
    model = ForeignLIFFirst(step_mode)
    x = torch.randn(3, 2, 1, 6, 6)
    with attach_probe(model, keep_maps=True) as probe:
        functional.reset_net(model)
        model(x).sum().backward()
    (site,) = probe.sites
    assert site.name == "features.1" and isinstance(site.pool, nn.MaxPool2d)  # no common parent
    frame = probe.to_frame()
    assert set(frame["variant"]) == {"lif_maxpool"}
    assert frame["t"].tolist() == [0, 1, 2]
    records = sorted(probe.records, key=lambda r: r.t0)
    assert len(records) == (1 if step_mode == "m" else 3)
    landing = torch.cat([r.maps["landing"] for r in records])
    spikes = torch.cat([r.maps["pooled"] for r in records])
    assert spikes.shape == (3, 2, 2, 6, 6)
    assert torch.equal(landing, theory.first_spike_landing(spikes))


class SEWAvgDown(nn.Module):
    """A SEW-ResNet-style block with an avg-down shortcut ``AvgPool → Conv1x1 → BN → LIF`` that
    reads the block input, registered right after the main path's conv-BN-LIF; then a real CML
    site. In registration order the main path's BN, LIF and the shortcut's AvgPool look like
    ConvBN-LIF-AvgPool, but that pool never sees the LIF's spikes."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, 2, 1), nn.BatchNorm2d(4)),
            neuron.LIFNode(step_mode="m"),
        )
        self.shortcut = nn.Sequential(
            layer.SeqToANNContainer(nn.AvgPool2d(2), nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4)),
            neuron.LIFNode(step_mode="m"),
        )
        self.cml = nn.Sequential(
            layer.SeqToANNContainer(
                nn.Conv2d(4, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.MaxPool2d(3, 2, 1)
            ),
            neuron.LIFNode(step_mode="m"),
        )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.cml(self.main(x_seq) + self.shortcut(x_seq))


@pytest.mark.parametrize("input_grad", [False, True])
def test_foreign_site_matched_across_blocks_is_dropped_after_its_first_forward(input_grad) -> None:
    torch.manual_seed(0)
    model = SEWAvgDown()
    assert [s.name for s in find_sites(model)] == ["main.0.1", "cml"]  # the order is fooled
    x = torch.randn(2, 2, 2, 8, 8, requires_grad=input_grad)  # raw input: its pool has no grad
    with warnings.catch_warnings(record=True) as caught, attach_probe(model) as probe:
        warnings.simplefilter("always")
        for _ in range(2):
            functional.reset_net(model)
            model(x).sum().backward()
    dropped = [w for w in caught if "main.0.1" in str(w.message)]
    assert len(dropped) == 1 and "pool" in str(dropped[0].message)
    assert [s.name for s in probe.sites] == ["cml"]
    frame = probe.to_frame()
    assert set(frame["site"]) == {"cml"} and set(frame["variant"]) == {"maxpool_lif"}
    assert frame["precision"].tolist() == [1.0] * 4  # two steps x T=2
    assert hook_count(model) == 0


class NeuronReadsElsewhere(nn.Module):
    """BN → MaxPool in one block, and a sibling block's LIF that reads the block input, not the
    pool: ConvBN-MaxPool-LIF by registration order only."""

    def __init__(self) -> None:
        super().__init__()
        self.a = layer.SeqToANNContainer(
            nn.Conv2d(1, 2, 3, 1, 1), nn.BatchNorm2d(2), nn.MaxPool2d(2)
        )
        self.b = neuron.LIFNode(step_mode="m")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.a(x_seq).sum() + self.b(x_seq).sum()


def test_foreign_site_whose_neuron_reads_elsewhere_is_dropped() -> None:
    model = NeuronReadsElsewhere()
    with pytest.warns(UserWarning, match=r"'a\.1'.*neuron") as caught, attach_probe(model) as probe:
        functional.reset_net(model)
        model(torch.randn(2, 1, 1, 6, 6, requires_grad=True)).backward()
    assert len(caught) == 1 and probe.sites == [] and probe.records == []


def test_sites_by_name_and_bad_names() -> None:
    model = create_model(
        "sps_tokenizer_cifar", downsample="lif_maxpool", T=2, embed_dim=16, img_size=8
    )
    assert [s.name for s in find_sites(model, ["stem.stages.stage4"])] == ["stem.stages.stage4"]
    named = find_sites(model, ["stem.stages.stage1"])  # ConvBN-LIF, no pool: a window-less site
    assert named[0].pool is None
    with pytest.raises(ValueError, match=r"no module 'stem\.nope'"):
        find_sites(model, ["stem.nope"])
    with pytest.raises(ValueError, match="holds no downsampling site"):
        find_sites(model, ["head"])
    with pytest.raises(ValueError, match="no downsampling site found"):
        attach_probe(nn.Sequential(nn.Linear(2, 2)))
