"""Cost accounting: LIF-neuron counts per site (CML/baseline = 1/4), op counters, energy."""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import layer
from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter
from torch import nn

from gradprobe.cost import (
    E_AC_PJ,
    E_MAC_PJ,
    DenseSpikeOpCounter,
    cost_report,
    count_parameters,
    synaptic_mac_counter,
)
from gradprobe.downsample import forward_of
from gradprobe.models import create_model

TINY_CIFAR = dict(embed_dim=16, num_heads=2, depth=1, img_size=16, T=2)


@pytest.mark.parametrize("name", ["spikformer_4_384_cifar", "spikingformer_4_384_cifar"])
def test_cml_site_neurons_are_a_quarter_of_the_baseline(name) -> None:
    report = cost_report(name, batch_size=2, bn_batch_stats=True, **TINY_CIFAR)
    sites = report[report.scope.str.startswith("stem.")].set_index(["downsample", "scope"])
    # stage3 spikes D/2 x 16 x 16 in the baseline, D/2 x 8 x 8 after the pool
    assert sites.loc[("lif_maxpool", "stem.stages.stage3"), "lif_neurons"] == 8 * 16 * 16
    assert sites.loc[("maxpool_lif", "stem.stages.stage3"), "lif_neurons"] == 8 * 8 * 8
    ratio = report[report.scope == "all sites"].set_index("downsample")["lif_ratio"]
    paper = {"avgpool_lif": 0.25, "lif_maxpool": 1.0, "maxpool_lif": 0.25, "strided_conv": 0.25}
    assert {v: ratio[v] for v in paper} == paper
    # a variant that changes the backward only has the neurons of the variant it computes
    assert {v: ratio[v] for v in ratio.index} == {v: paper[forward_of(v)] for v in ratio.index}
    # only the sites change: every other neuron count is equal across variants
    model = report[report.scope == "model"].set_index("downsample")["lif_neurons"]
    site_total = report[report.scope == "all sites"].set_index("downsample")["lif_neurons"]
    assert (model - site_total).nunique() == 1


def test_report_columns_and_energy() -> None:
    report = cost_report("spiking_resnet19_cifar", downsamples=["lif_maxpool", "strided_conv"],
                         width=4, layers=(1, 1, 1), fc_hidden=8, img_size=8, T=2)  # fmt: skip
    assert list(report.columns) == [
        "model", "downsample", "scope", "lif_neurons", "lif_ratio", "firing_rate",
        "macs", "acs_dense", "sops", "energy_mj",
    ]  # fmt: skip
    assert list(report.scope.unique()) == ["layer2.0.conv1", "layer3.0.conv1", "all sites", "model"]
    expected = (E_MAC_PJ * report.macs + E_AC_PJ * report.sops) * 1e-9
    assert torch.allclose(torch.tensor(report.energy_mj.values), torch.tensor(expected.values))
    whole = report[report.scope == "model"].iloc[0]
    # the first conv sees the float image: 3*9 inputs per output, 4 channels, 8x8, 2 steps
    assert whole.macs >= 3 * 9 * 4 * 8 * 8 * 2
    assert (report.firing_rate.between(0, 1)).all()


def test_op_counters_split_spike_and_float_inputs() -> None:
    fc = layer.Linear(6, 4, bias=True, step_mode="m")
    spikes = (torch.rand(2, 3, 6) < 0.5).float()
    dense, macs, sops = DenseSpikeOpCounter(), synaptic_mac_counter(), SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([dense, macs, sops]):
        fc(spikes)
        fc(torch.rand(2, 3, 6) + 2.0)
    assert dense.get_total() == 2 * 3 * 4 * 6  # the spike call, as if dense
    assert macs.get_total() == 2 * 3 * 4 * 6  # the float call
    assert sops.get_total() == int(spikes.sum()) * 4


def test_conv_dense_ops() -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    counter = DenseSpikeOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        conv((torch.rand(2, 3, 4, 4) < 0.5).float())
    assert counter.get_total() == 2 * 5 * 4 * 4 * 3 * 9


def test_count_parameters_without_reference_leftovers() -> None:
    with torch.device("meta"):
        model = create_model("spikformer_4_384_cifar")
    assert count_parameters(model) == 9_330_874
    assert count_parameters(model, used_only=True) == 9_330_874 - 6_144
