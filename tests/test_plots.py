"""Every figure renders to a non-trivial PNG from what the probe and the explorer return."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from gradprobe import labels
from gradprobe.downsample import build_downsample
from gradprobe.explore import passthrough_site, probe_variants
from gradprobe.plots import (
    draw_landing,
    plot_attributions,
    plot_site_heatmaps,
    plot_site_maps,
    plot_timestep_metrics,
    plot_window,
)

WINDOW = torch.tensor([[0.4, 2.3, -0.6], [2.6, 3.8, 1.1], [-0.9, 2.1, 0.2]])


def assert_rendered(fig, path):
    """Save as PNG and check that it is a real picture: some size, many distinct pixels."""
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    assert path.stat().st_size > 5_000
    pixels = mpimg.imread(path)
    assert pixels.std() > 0.05
    assert len(torch.from_numpy(pixels[..., :3].reshape(-1, 3)).unique(dim=0)) > 20


@pytest.fixture(scope="module")
def site_run():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 3, 16, 16)
    return probe_variants(lambda v: build_downsample(v, 3, 4), x, keep_maps=True)


def test_plot_window(tmp_path):
    pooling = ["lif_maxpool", "maxpool_lif", "avgpool_lif"]
    _, records = probe_variants(
        passthrough_site, WINDOW[None, None, None], downsamples=pooling, keep_maps=True
    )
    spikes = records["lif_maxpool"][0].maps["spikes"][0, 0, 0]
    grads = {v: records[v][0].maps["grad_x"][0, 0, 0] for v in pooling}
    fig = plot_window(WINDOW, spikes, grads, title="one window")
    assert len(fig.axes) == 5
    assert "at argmax: 0.00" in fig.axes[2].get_title()  # baseline: first spike, not argmax
    assert "at argmax: 1.00" in fig.axes[3].get_title()  # CML
    assert "at argmax: 0.11" in fig.axes[4].get_title()  # average pool: 1/9
    assert_rendered(fig, tmp_path / "window.png")


def test_plot_site_maps(site_run, tmp_path):
    _, records = site_run
    base, cml = records["lif_maxpool"][0].maps, records["maxpool_lif"][0].maps
    pick = (1, 0, 0)
    fig = plot_site_maps(
        base["x"][pick], base["argmax"][pick],
        {"lif_maxpool": base["landing"][pick], "maxpool_lif": cml["landing"][pick]},
        spikes=base["spikes"][pick], title="a site", region=(0, 8, 0, 8),
    )  # fmt: skip
    assert fig.axes[0].get_xlim() == (-0.5, 7.5)
    assert "landing = argmax: 1.00" in fig.axes[3].get_title()
    assert_rendered(fig, tmp_path / "site.png")


def test_draw_landing_counts_hits():
    fig, ax = plt.subplots()
    landing = torch.tensor([[0, 5], [-1, 15]])  # -1: a window without a single landing
    argmax = torch.tensor([[0, 6], [8, 15]])
    assert draw_landing(ax, torch.rand(4, 4), landing, argmax, "rule") == pytest.approx(2 / 3)
    assert math.isnan(draw_landing(ax, torch.rand(4, 4), torch.full((2, 2), -1), argmax))
    plt.close(fig)


def test_plot_timestep_metrics(site_run, tmp_path):
    frame, _ = site_run
    fig = plot_timestep_metrics(frame, metrics=("precision", "tie_rate"))
    assert len(fig.axes) == 2
    assert_rendered(fig, tmp_path / "timesteps.png")


def test_plot_site_heatmaps(tmp_path):
    rows = [
        {"model": m, "site": s, "variant": v, "precision": p, "tie_rate": 0.5, "lif_ratio": r}
        for m in ("net_a", "net_b")
        for s in ("stage3", "stage4")
        for v, p, r in (
            ("lif_maxpool", 0.4, 1.0),
            ("maxpool_lif", 1.0, 0.25),
            ("avgpool_lif", math.nan, 0.25),
        )
    ]
    fig = plot_site_heatmaps(pd.DataFrame(rows))
    assert [ax.get_title() for ax in fig.axes] == ["precision", "tie rate", "lif ratio"]
    assert_rendered(fig, tmp_path / "heatmaps.png")


def test_plot_attributions(tmp_path):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 16, 16, generator=gen)
    maps = {
        "lif_maxpool": torch.randn(2, 4, 16, 16, generator=gen),
        "strided_conv": torch.randn(2, 4, 8, 8, generator=gen),
    }
    fig = plot_attributions(images, maps, torch.tensor([0, 1]), ["cat", "dog"])
    assert len(fig.axes) == 6
    assert_rendered(fig, tmp_path / "attributions.png")


def test_variants_are_named_and_ordered_by_the_one_label_table(monkeypatch):
    # a registered variant's label (as `register_downsample(..., label=...)` records it)
    monkeypatch.setattr(labels, "LABELS", {**labels.LABELS, "my_pool": "ConvBN-MyPool-LIF"})
    rows = [
        {"model": "net", "site": "s", "variant": v, "precision": 0.5, "tie_rate": 0.5,
         "lif_ratio": 1.0}
        for v in ("zz_pool", "my_pool", "maxpool_lif", "lif_maxpool")
    ]  # fmt: skip
    fig = plot_site_heatmaps(pd.DataFrame(rows))
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["ConvBN-LIF-MaxPool", "ConvBN-MaxPool-LIF", "ConvBN-MyPool-LIF", "zz_pool"]
    plt.close(fig)
