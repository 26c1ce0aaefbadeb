"""The notebooks' one-call experiments: inputs, the pass-through site, variants side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradprobe import theory
from gradprobe.data import DIGITS_CLASSES
from gradprobe.downsample import build_downsample, forward_of
from gradprobe.explore import (
    data_root,
    example_images,
    passthrough_site,
    probe_variants,
    site_report,
    variant_attributions,
    variants,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POOLING = ["lif_maxpool", "maxpool_lif", "avgpool_lif"]
# One 3x3 window: four positions reach the LIF threshold (x >= 2 at t=0) and tie; the argmax
# (3.8, position 4) is not the first of them (2.3, position 1).
WINDOW = torch.tensor([[0.4, 2.3, -0.6], [2.6, 3.8, 1.1], [-0.9, 2.1, 0.2]])


def tiny(variant: str):
    return build_downsample(variant, 3, 4)


def test_variants_in_paper_order():
    assert variants()[:4] == ["lif_maxpool", "maxpool_lif", "avgpool_lif", "strided_conv"]


def test_data_root_from_argument_then_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADPROBE_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert data_root(tmp_path / "other") == tmp_path / "other"  # the caller's root wins
    monkeypatch.delenv("GRADPROBE_DATA")
    assert data_root() is None  # no layout is guessed from where the package lies


def test_example_images_without_any_root_are_digits(monkeypatch):
    monkeypatch.delenv("GRADPROBE_DATA", raising=False)
    assert example_images(2).source == "digits"


def test_example_images_fall_back_on_digits(tmp_path):
    batch = example_images(3, root=tmp_path, seed=1)
    assert batch.source == "digits" and batch.classes == DIGITS_CLASSES
    assert batch.images.shape == (3, 3, 32, 32) and batch.images.dtype == torch.float32
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert torch.equal(batch.images, example_images(3, root=tmp_path, seed=1).images)


def test_example_images_cifar_when_present(monkeypatch):
    if not (SHARED_DATA / "cifar10-jpeg" / "test").is_dir():
        pytest.skip("the shared CIFAR-10 JPEG folder is not present")
    batch = example_images(2, root=SHARED_DATA)
    assert batch.source == "cifar10-jpeg/test" and len(batch.classes) == 10
    assert batch.images.shape == (2, 3, 32, 32) and batch.images.std() > 0
    monkeypatch.setenv("GRADPROBE_DATA", str(SHARED_DATA))  # as the harness's paths.data
    batch = example_images(2)
    assert batch.source == "cifar10-jpeg/test" and len(batch.classes) == 10
    assert batch.images.shape == (2, 3, 32, 32) and batch.images.std() > 0


@pytest.mark.parametrize("variant", POOLING)
def test_passthrough_site_sees_x_unchanged(variant):
    site = passthrough_site(variant)
    x = WINDOW[None, None, None]
    assert torch.equal(site.bn(site.conv(x)), x)
    assert site(x).shape == (1, 1, 1, 1, 1)


def test_passthrough_site_has_no_strided_form():
    with pytest.raises(ValueError, match="no pooling window"):
        passthrough_site("strided_conv")


def test_one_window_lands_as_the_paper_says():
    frame, records = probe_variants(
        passthrough_site, WINDOW[None, None, None], downsamples=POOLING, keep_maps=True
    )
    by = frame.set_index("variant")
    assert by.loc["lif_maxpool", "precision"] == 0.0 and by.loc["lif_maxpool", "tie_rate"] == 1.0
    assert by.loc["maxpool_lif", "precision"] == 1.0
    assert by.loc["avgpool_lif", "mass_at_argmax"] == pytest.approx(1 / 9)
    spikes = records["lif_maxpool"][0].maps["spikes"][0, 0, 0]
    assert torch.equal(spikes, theory.lif_spikes(WINDOW[None])[0])
    landing = {
        v: int(records[v][0].maps["grad_x"].flatten().nonzero().squeeze()) for v in POOLING[:2]
    }
    assert landing["lif_maxpool"] == theory.first_spike_landing(spikes, 3, 3, 0).item() == 1
    assert landing["maxpool_lif"] == theory.argmax_landing(WINDOW, 3, 3, 0).item() == 4


def test_probe_variants_same_weights_and_forward_order():
    x = torch.rand(2, 2, 3, 8, 8)
    frame, records = probe_variants(tiny, x, keep_maps=True)
    assert list(dict.fromkeys(frame["variant"])) == variants()
    pooled = [records[v][0].maps["x"] for v in POOLING]
    assert all(torch.equal(pooled[0], m) for m in pooled[1:])  # same conv-BN, same x
    assert (frame.query("variant == 'maxpool_lif'")["precision"] == 1.0).all()


def test_probe_variants_on_a_backbone_orders_sites():
    images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    _, records = probe_variants(
        "sps_tokenizer_cifar", images, labels, downsamples=["lif_maxpool"], T=2,
        embed_dim=16, img_size=8,
    )  # fmt: skip
    sites = [r.site for r in records["lif_maxpool"]]
    assert sites == ["stem.stages.stage3", "stem.stages.stage4"]


def test_site_report_merges_probe_and_cost():
    images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    table = site_report("sps_tokenizer_cifar", images, labels, T=2, embed_dim=16, img_size=8)
    assert len(table) == 2 * len(variants())
    assert set(table["model"]) == {"sps_tokenizer_cifar"}
    baseline_neurons = table["variant"].map(forward_of) == "lif_maxpool"
    assert (table["lif_ratio"] == baseline_neurons.map({True: 1.0, False: 0.25})).all()
    assert (table.query("variant == 'maxpool_lif'")["precision"] == 1.0).all()
    assert table["lif_neurons"].notna().all()


def test_variant_attributions_shapes():
    images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    maps = variant_attributions(
        "sps_tokenizer_cifar", images, labels, T=2, embed_dim=16, img_size=8
    )
    assert list(maps) == variants()
    assert maps["maxpool_lif"].shape == (2, 8, 8, 8)
    assert maps["strided_conv"].shape == (2, 8, 4, 4)  # its x is already downsampled
