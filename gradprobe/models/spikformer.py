"""Spikformer (Zhou et al., ICLR 2023) in its CIFAR, ImageNet and DVS forms.

Spiking Patch Splitting (SPS) stem with a relative position embedding (RPE), spiking
self-attention, MLP, and a spike + spike residual (spec section 2.1). Every max-pooling stage of
the SPS is a downsampling site: stages 3 and 4 on CIFAR (patch 4), all four stages on ImageNet
and DVS (patch 16). ``downsample="lif_maxpool"`` is the reference; ``"maxpool_lif"`` is
CML-Spikformer.

Reference quirks mirrored so that parameter counts equal the reference integers (spec section 3);
each is listed by `Spikformer.unused_parameters` and can be dropped with ``legacy_params=False``:

* every block creates LayerNorms ``norm1``/``norm2`` that forward never calls (4·D per block);
* the DVS form also creates a ``pos_embed`` of ``N x D`` and a final LayerNorm ``norm``, both
  unused (the RPE conv is the only position encoding).

Left out: the DVS attention's unused Dropout and ``res_lif``, and the DropPath modules that are
created but never called (no parameters, no effect on numbers).
"""

from __future__ import annotations

import torch

from gradprobe.downsample import ConvBNLIF
from gradprobe.models import register_model
from gradprobe.models.transformer import Pointwise, Recipe, RecipeTransformer, Stem
from gradprobe.neuron import NeuronConfig


class SpikformerStem(Stem):
    """SPS: four conv-BN-LIF stages (the last ``n_sites`` are downsampling sites), then the RPE
    conv-BN-LIF whose spikes are added to the stage-4 spikes (values in {0, 1, 2})."""

    def build_tail(self, embed_dim: int, neuron: NeuronConfig | None) -> None:
        self.rpe = ConvBNLIF(embed_dim, embed_dim, neuron=neuron)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        x_seq = self.stages(x_seq)
        return x_seq + self.rpe(x_seq)


def default_tau(form: str, downsample: str) -> tuple[float, str]:
    """The reference membrane time constant, and where it comes from: 2 in every Spikformer form
    and variant (spec section 1)."""
    return 2.0, "Spikformer reference"


class Spikformer(RecipeTransformer):
    """Spikformer-L-D with every SPS downsampling site built as variant ``downsample``.

    Post-activation: a LIF after every BN, so attention and MLP output spikes and the residual
    stream adds spikes. The reference files' pointwise layers: ``Linear`` (q/k/v with bias) on
    CIFAR, ``Conv1d`` on ImageNet/DVS, with a ``Conv2d`` 1x1 MLP on ImageNet. Attention scale
    0.125, 0.25 on DVS; tau 2 everywhere. Takes the arguments of `RecipeTransformer`.
    """

    recipe = Recipe(
        stem=SpikformerStem,
        lif="post",
        pointwise={
            "cifar": Pointwise(qkv="linear", qkv_bias=True, proj="linear", mlp="linear"),
            "imagenet": Pointwise(qkv="conv1d", qkv_bias=False, proj="conv1d", mlp="conv2d"),
            "dvs": Pointwise(qkv="conv1d", qkv_bias=False, proj="conv1d", mlp="conv1d"),
        },
        attn_scale={"cifar": 0.125, "imagenet": 0.125, "dvs": 0.25},
        reference_tau=default_tau,
        legacy_extras=frozenset({"dvs"}),
    )


@register_model()
def spikformer_4_256_cifar(**kwargs: object) -> Spikformer:
    """Spikformer-4-256 for CIFAR (32x32, 2 sites); 8 heads (our choice: 256 is not divisible
    by the yml's 12; head width 32).

    Example:
        >>> model = spikformer_4_256_cifar(downsample="maxpool_lif", num_classes=100)
    """
    return Spikformer.create("cifar", kwargs, depth=4, embed_dim=256, num_heads=8)


@register_model()
def spikformer_2_384_cifar(**kwargs: object) -> Spikformer:
    """Spikformer-2-384 for CIFAR; 12 heads as in the reference yml.

    Example:
        >>> model = spikformer_2_384_cifar(downsample="maxpool_lif")
    """
    return Spikformer.create("cifar", kwargs, depth=2, embed_dim=384, num_heads=12)


@register_model()
def spikformer_4_384_cifar(**kwargs: object) -> Spikformer:
    """Spikformer-4-384 for CIFAR, the paper's main CIFAR model; 12 heads (reference yml).

    Example:
        >>> model = spikformer_4_384_cifar(downsample="maxpool_lif", num_classes=10, T=4)
    """
    return Spikformer.create("cifar", kwargs, depth=4, embed_dim=384, num_heads=12)


@register_model()
def spikformer_8_384_imagenet(**kwargs: object) -> Spikformer:
    """Spikformer-8-384 for ImageNet (224, 4 sites); 8 heads as the reference factory.

    Example:
        >>> model = spikformer_8_384_imagenet(downsample="maxpool_lif")
    """
    return Spikformer.create("imagenet", kwargs, depth=8, embed_dim=384, num_heads=8)


@register_model()
def spikformer_8_512_imagenet(**kwargs: object) -> Spikformer:
    """Spikformer-8-512 for ImageNet, the reference factory's default; 8 heads.

    Example:
        >>> model = spikformer_8_512_imagenet(downsample="maxpool_lif")
    """
    return Spikformer.create("imagenet", kwargs, depth=8, embed_dim=512, num_heads=8)


@register_model()
def spikformer_8_768_imagenet(**kwargs: object) -> Spikformer:
    """Spikformer-8-768 for ImageNet; 8 heads as the reference factory.

    Example:
        >>> model = spikformer_8_768_imagenet(downsample="maxpool_lif")
    """
    return Spikformer.create("imagenet", kwargs, depth=8, embed_dim=768, num_heads=8)


@register_model()
def spikformer_2_256_dvs(**kwargs: object) -> Spikformer:
    """Spikformer-2-256 for 128x128 two-polarity event frames; 16 heads, attention scale 0.25,
    tau 2, 10 classes (CIFAR10-DVS; pass ``num_classes=11`` for DVS128 Gesture).

    Example:
        >>> model = spikformer_2_256_dvs(downsample="maxpool_lif", T=16)
    """
    return Spikformer.create("dvs", kwargs, depth=2, embed_dim=256, num_heads=16)
