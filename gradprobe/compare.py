"""Every variant on the same weights and batches: the routine behind ``gradprobe probe`` and the
notebooks (through `gradprobe.explore`).

For each variant the model is built under the same seed, so variants that share parameter
shapes start from the same weights, and runs in training mode (BatchNorm normalises with the
batch statistics, as in a training step, so untrained neurons fire). Each batch is one probed
forward/backward, neuron state reset before it: the loss is the cross-entropy of the output
against the labels, or the sum of the output without labels (every window then routes a
gradient of 1). No optimizer step is taken: every batch sees the initial weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from gradprobe.downsample import list_downsamples
from gradprobe.models import create_model
from gradprobe.probe import SiteRecord, attach_probe, sort_records

ModelSpec = str | Callable[[str], nn.Module]


class VariantProbes(NamedTuple):
    """What `probe_variants` measured.

    Attributes:
        frame: The probe frames of all variants concatenated (`gradprobe.probe.FRAME_COLUMNS`),
            variants in the order asked for.
        records: Variant name → its records, by step and site in forward order.
    """

    frame: pd.DataFrame
    records: dict[str, list[SiteRecord]]


def build_variant(model: ModelSpec, variant: str, seed: int = 0, **model_kwargs: object):
    """Build ``model`` with downsampling ``variant`` from the weights of ``seed``.

    Args:
        model: A registered backbone name, or a factory ``variant -> module``.
        variant: A registered downsampling variant.
        seed: Seed set right before building: same seed, same weights for every variant whose
            parameter shapes agree.
        **model_kwargs: Passed to `gradprobe.models.create_model` (names only).

    Example:
        >>> a, b = (build_variant("sps_tokenizer_cifar", v, embed_dim=16, img_size=8)
        ...         for v in ("lif_maxpool", "maxpool_lif"))
        >>> torch.equal(a.head.weight, b.head.weight)
        True
    """
    torch.manual_seed(seed)
    if isinstance(model, str):
        return create_model(model, downsample=variant, **model_kwargs)
    return model(variant)


def probe_variants(
    model: ModelSpec,
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    downsamples: Iterable[str] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    keep_maps: bool = False,
    on_step: Callable[[str], None] | None = None,
    **model_kwargs: object,
) -> VariantProbes:
    """Probe every variant on the same weights and the same batches.

    Args:
        model: A registered backbone name, or a factory ``variant -> module`` (e.g. a site
            from `gradprobe.downsample.build_downsample`).
        inputs: The module's input (``[N, C, H, W]`` images for a backbone, ``[T, N, C, H, W]``
            for a bare site).
        labels: Class labels ``[N]``: the loss is cross-entropy on the output; ``None``: the sum
            of the output.
        downsamples: Variants, in the order of the result; all registered ones by default.
        seed: Weight seed, the same for every variant (`build_variant`).
        batch_size: Images per step, split along the batch dimension (dim 0, which must then be
            the images'); ``None``: all of them in one step.
        keep_maps: Keep x, spikes, landing and argmax maps in the records.
        on_step: Called with the variant's name after each step (e.g. a progress bar).
        **model_kwargs: Passed to `gradprobe.models.create_model` (``T``, ``num_classes``...).

    Returns:
        The `VariantProbes`; unpacks as ``frame, records``.

    Example:
        >>> from gradprobe.downsample import build_downsample
        >>> frame, _ = probe_variants(
        ...     lambda v: build_downsample(v, 3, 4), torch.rand(2, 1, 3, 8, 8),
        ...     downsamples=["maxpool_lif"])
        >>> frame["precision"].tolist()
        [1.0, 1.0]
    """
    size = batch_size or len(inputs)
    batches = [
        (inputs[i : i + size], None if labels is None else labels[i : i + size])
        for i in range(0, len(inputs), size)
    ]
    frames, records = [], {}
    for variant in list(downsamples or list_downsamples()):
        net = build_variant(model, variant, seed, **model_kwargs).train()
        with attach_probe(net, keep_maps=keep_maps) as probe:
            for x, y in batches:
                functional.reset_net(net)
                # A leaf that wants a gradient: a bare site's x may be the input itself.
                out = net(x.clone().requires_grad_(True))
                loss = out.sum() if y is None else F.cross_entropy(out, y)
                loss.backward()
                net.zero_grad(set_to_none=True)
                if on_step is not None:
                    on_step(variant)
        functional.reset_net(net)
        frames.append(probe.to_frame())
        records[variant] = sort_records(probe.records, [site.name for site in probe.sites])
    return VariantProbes(pd.concat(frames, ignore_index=True), records)
