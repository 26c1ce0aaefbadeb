"""One-call experiments behind the notebooks: example inputs, one probed batch per variant.

The notebooks in ``notebooks/`` hold no logic of their own; what they run lives here, on top
of `gradprobe.compare`, `gradprobe.cost` and `gradprobe.attribution`:

* `data_root` and `example_images`: a real image batch, CIFAR-10 from the JPEG folder under
  the data root the caller passes (or ``$GRADPROBE_DATA``) when it is there, the embedded
  digits otherwise, so every notebook runs offline.
* `passthrough_site`: a downsampling site whose conv-BN is the identity, so a hand-made
  pre-spike map x is exactly what the neuron and the pool see (one window, eqs. (7)/(11)).
* `probe_variants`: one forward/backward of the same weights and batch for every variant,
  probed at every site (`gradprobe.compare.probe_variants`, variants in display order);
  `site_report` adds `gradprobe.cost`'s LIF neurons per site.
* `variant_attributions`: captum attributions at a site's pre-spike map for every variant.

Untrained models are run in training mode: BatchNorm then normalises with the batch's own
statistics, which makes the neurons fire; with the initial running statistics almost every
neuron stays silent and every window would tie (see `gradprobe.cost.measure_cost`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from spikingjelly.activation_based import functional
from torch import nn

from gradprobe import compare
from gradprobe.attribution import site_attribution
from gradprobe.compare import ModelSpec, VariantProbes, build_variant
from gradprobe.cost import cost_report
from gradprobe.data import DIGITS_CLASSES, load_digits, load_image_folder
from gradprobe.downsample import (
    DownsampleSite,
    PoolSpec,
    build_downsample,
    list_downsamples,
)
from gradprobe.labels import sort_variants
from gradprobe.neuron import NeuronConfig
from gradprobe.probe import summarize

CIFAR10_JPEG = "cifar10-jpeg"


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The dataset root: ``root`` if given, else ``$GRADPROBE_DATA`` (the variable the
    harness's ``paths.data`` reads), else ``None``: no dataset, use the embedded digits.

    Example:
        >>> str(data_root("/data/sets"))
        '/data/sets'
    """
    if root is None:
        root = os.environ.get("GRADPROBE_DATA") or None
    return None if root is None else Path(root)


@dataclass(frozen=True)
class ImageBatch:
    """A few real images for probing.

    Attributes:
        images: ``float32 [N, 3, 32, 32]`` in [0, 1].
        labels: ``int64 [N]``.
        classes: Class names, indexed by label.
        source: ``"cifar10-jpeg/test"`` or ``"digits"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    source: str


def example_images(
    n: int = 8, *, root: str | os.PathLike | None = None, seed: int = 0
) -> ImageBatch:
    """``n`` test images: CIFAR-10 from ``<root>/cifar10-jpeg/test`` if present, else digits.

    Args:
        n: Number of images (a seeded random subset of the test split).
        root: Dataset root; ``None``: ``$GRADPROBE_DATA`` if set (`data_root`), else the
            embedded digits.
        seed: Seed of the subset draw.

    Returns:
        An `ImageBatch` of 32x32 RGB images.

    Example:
        >>> batch = example_images(2, root="/nonexistent")
        >>> batch.source, tuple(batch.images.shape)
        ('digits', (2, 3, 32, 32))
    """
    base = data_root(root)
    folder = base / CIFAR10_JPEG / "test" if base is not None else None
    if folder is not None and folder.is_dir():
        images, labels, classes = load_image_folder(folder, limit=n, size=32, seed=seed, workers=1)
        source = f"{CIFAR10_JPEG}/test"
    else:
        images, labels = load_digits(train=False)
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(labels), generator=gen)[:n].sort().values
        images, labels, classes, source = images[pick], labels[pick], DIGITS_CLASSES, "digits"
    return ImageBatch(images.float() / 255.0, labels, tuple(classes), source)


def passthrough_site(
    variant: str, window: int = 3, *, neuron: NeuronConfig | None = None
) -> DownsampleSite:
    """A one-channel site of ``variant`` whose conv-BN passes its input through unchanged.

    The pool tiles the map with non-overlapping ``window x window`` windows (stride = kernel,
    no padding), so a hand-made ``[T, B, 1, window, window]`` map is one pooling window.

    Args:
        variant: A pooling variant (``strided_conv`` has no window: its conv downsamples).
        window: Window side.
        neuron: Neuron settings; the reference LIF by default.

    Example:
        >>> site = passthrough_site("maxpool_lif")
        >>> site(torch.full((1, 1, 1, 3, 3), 3.0)).flatten().tolist()
        [1.0]
    """
    if variant == "strided_conv":
        raise ValueError("strided_conv has no pooling window: its strided conv downsamples")
    site = build_downsample(
        variant, 1, 1, kernel_size=1, neuron=neuron, pool=PoolSpec(window, window, 0)
    )
    # Identity modules keep x bit-exact (a BN in eval mode would rescale by 1/sqrt(1 + eps)).
    site.conv, site.bn = nn.Identity(), nn.Identity()
    return site


def variants() -> list[str]:
    """The registered variants in display order: the paper's four first, in its Table 1 order."""
    return sort_variants(list_downsamples())


def probe_variants(
    model: ModelSpec,
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    downsamples: Iterable[str] | None = None,
    **kwargs: object,
) -> VariantProbes:
    """One probed forward/backward per variant, same weights, same batch.

    `gradprobe.compare.probe_variants` (same arguments: ``seed``, ``keep_maps``, model
    arguments such as ``T``...), the variants in display order, `variants()`, by default.

    Returns:
        The probe frames of all variants concatenated (`gradprobe.probe.FRAME_COLUMNS`) and
        each variant's records, sites in forward order.

    Example:
        >>> frame, _ = probe_variants(
        ...     lambda v: build_downsample(v, 3, 4), torch.rand(2, 1, 3, 8, 8),
        ...     downsamples=["maxpool_lif"])
        >>> frame["precision"].tolist()
        [1.0, 1.0]
    """
    order = list(downsamples or variants())
    return compare.probe_variants(model, inputs, labels, downsamples=order, **kwargs)


def site_report(
    model_name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    downsamples: Iterable[str] | None = None,
    seed: int = 0,
    **model_kwargs: object,
) -> pd.DataFrame:
    """Precision, tie rate, spike rate and LIF neurons per site for every variant of a backbone.

    The probe runs `probe_variants` on the batch; the LIF counts come from
    `gradprobe.cost.cost_report` on the first image at T=1 (neurons per image and time step do
    not depend on T or the batch, and the op counters are the slow part).

    Returns:
        One row per variant and site: ``model``, `gradprobe.probe.summarize`'s columns
        (``site, variant, precision, mass_at_argmax, tie_rate, spike_rate, windows,
        grad_abs_mean``), ``lif_neurons`` and ``lif_ratio`` (LIF neurons over those of
        ``lif_maxpool`` at the same site). Rows summarize again, e.g. by variant.
    """
    downsamples = list(downsamples or variants())
    frame, _ = probe_variants(
        model_name, images, labels, downsamples=downsamples, seed=seed, **model_kwargs
    )
    probed = summarize(frame)
    cost_kwargs = {**model_kwargs, "T": 1}
    cost = cost_report(
        model_name, downsamples=downsamples, batch=images[:1], seed=seed, bn_batch_stats=True,
        **cost_kwargs,
    )  # fmt: skip
    cost = cost.rename(columns={"downsample": "variant", "scope": "site"})
    table = probed.merge(cost[["variant", "site", "lif_neurons", "lif_ratio"]], how="left")
    table.insert(0, "model", model_name)
    return table


def variant_attributions(
    model_name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    site: int = 0,
    downsamples: Iterable[str] | None = None,
    seed: int = 0,
    multiply_by_activation: bool = True,
    **model_kwargs: object,
) -> dict[str, torch.Tensor]:
    """captum attributions at one site's pre-spike map x for every variant, same weights.

    Args:
        model_name: A registered backbone.
        images: ``[B, C, H, W]``.
        labels: Target class per image ``[B]``.
        site: Index of the site in forward order.
        downsamples: Variants; `variants()` by default.
        seed: Weight seed.
        multiply_by_activation: gradient x activation (``True``) or the raw gradient dL/dx.
        **model_kwargs: Passed to `create_model`.

    Returns:
        Variant name → attribution ``[B, C, H, W]`` averaged over time steps (``strided_conv``'s
        x is already downsampled, so its maps are half the size).
    """
    maps = {}
    for variant in downsamples or variants():
        net = build_variant(model_name, variant, seed, **model_kwargs).train()
        name = list(net.downsample_sites())[site]
        maps[variant] = site_attribution(
            net, name, images, labels, multiply_by_activation=multiply_by_activation
        ).detach()
        functional.reset_net(net)
    return maps
