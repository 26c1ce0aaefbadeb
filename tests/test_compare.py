"""Every variant on the same weights and batches: the routine of the CLI and the notebooks."""

from __future__ import annotations

import pandas as pd
import torch

from gradprobe import explore
from gradprobe.compare import VariantProbes, build_variant, probe_variants
from gradprobe.downsample import build_downsample, list_downsamples

TINY = {"T": 2, "embed_dim": 16, "img_size": 8}


def batch(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 10


def test_build_variant_same_seed_same_weights() -> None:
    nets = [build_variant("sps_tokenizer_cifar", v, seed=3, **TINY) for v in list_downsamples()]
    names = [n for n, _ in nets[0].named_parameters() if "stages" not in n]
    params = [dict(net.named_parameters()) for net in nets]
    assert all(torch.equal(params[0][n], p[n]) for p in params[1:] for n in names)
    site = build_variant(lambda v: build_downsample(v, 3, 4), "maxpool_lif")
    assert site.variant == "maxpool_lif"


def test_batches_are_steps_and_each_step_is_reported() -> None:
    images, labels = batch()
    seen = []
    result = probe_variants(
        "sps_tokenizer_cifar", images, labels, downsamples=["maxpool_lif", "lif_maxpool"],
        batch_size=2, on_step=seen.append, **TINY,
    )  # fmt: skip
    assert isinstance(result, VariantProbes)
    assert seen == ["maxpool_lif"] * 3 + ["lif_maxpool"] * 3  # 5 images in batches of 2
    frame = result.frame
    assert list(dict.fromkeys(frame["variant"])) == ["maxpool_lif", "lif_maxpool"]
    assert sorted(set(frame["step"])) == [0, 1, 2]
    totals = frame.query("variant == 'maxpool_lif'").groupby("step")["windows_total"].sum()
    assert totals[2] * 2 == totals[0] == totals[1]  # the last batch holds the fifth image
    records = result.records["lif_maxpool"]
    assert [(r.step, r.site) for r in records[:2]] == [
        (0, "stem.stages.stage3"),
        (0, "stem.stages.stage4"),
    ]


def test_a_batch_size_covering_every_image_is_one_step() -> None:
    images, labels = batch(4)
    args = ("sps_tokenizer_cifar", images, labels)
    whole = probe_variants(*args, downsamples=["lif_maxpool"], **TINY)
    covered = probe_variants(*args, downsamples=["lif_maxpool"], batch_size=8, **TINY)
    pd.testing.assert_frame_equal(whole.frame, covered.frame, check_exact=True)
    assert set(whole.frame["step"]) == {0}


def test_default_variants_are_the_registry() -> None:
    frame, _ = probe_variants(lambda v: build_downsample(v, 3, 4), torch.rand(2, 1, 3, 8, 8))
    assert list(dict.fromkeys(frame["variant"])) == list_downsamples()


def test_explore_is_the_same_routine_in_display_order() -> None:
    images, labels = batch(2)
    shown, _ = explore.probe_variants("sps_tokenizer_cifar", images, labels, **TINY)
    direct, _ = probe_variants(
        "sps_tokenizer_cifar", images, labels, downsamples=explore.variants(), **TINY
    )
    pd.testing.assert_frame_equal(shown, direct, check_exact=True)
