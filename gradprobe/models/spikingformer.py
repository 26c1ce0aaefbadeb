"""Spikingformer (Zhou et al. 2023) and CML-Spikingformer in CIFAR, ImageNet and DVS forms.

Spike-driven pre-activation residual learning (spec section 2.2): every projection takes spikes
because each attention/MLP branch starts with a LIF, and the residual stream carries BN outputs.

The reference tokenizer reads ``conv0-BN, [LIF-conv1-BN], [LIF-conv2-BN], [LIF-MP-conv3-BN],
[LIF-MP-conv4-BN]`` (CIFAR). We regroup the same modules so that each conv-BN and the LIF(-MP)
it feeds form one unit: ``conv0-BN-LIF, conv1-BN-LIF, site(conv2-BN, LIF, MP),
site(conv3-BN, LIF, MP), conv4-BN``. With ``lif_maxpool`` this is the reference forward; with
``maxpool_lif`` it is exactly CML's ``conv2-BN-MP → LIF-conv3-BN-MP → LIF-conv4-BN`` (section
2.3). ImageNet/DVS have four sites (``conv0`` to ``conv3``), each conv running at H, H/2, H/4,
H/8 and ``conv4`` at H/16.

Membrane time constant (spec section 1): tau 2 on CIFAR/ImageNet; on DVS the reference uses
1.5 for Spikingformer and 1.75 for CML-Spikingformer. With ``tau=None`` (and no ``neuron=``) the
DVS form therefore takes 1.75 when ``downsample="maxpool_lif"`` and 1.5 for every other variant
(the two variants without reference code inherit Spikingformer's value), which is what
reproduces the CML paper's DVS numbers. This is the only place in any registered backbone where
the variant changes something besides its sites (``tests/test_models.py`` checks it), so
``print(model)`` shows the tau in force and where it comes from; pass ``tau=`` to hold it fixed
across variants, so that only the site order differs.

Reference quirk mirrored (parameter counts equal spec section 3's integers): unused LayerNorms
``norm1``/``norm2`` per block (4·D), listed by `Spikingformer.unused_parameters`, dropped with
``legacy_params=False``. Left out: the DropPath that is created but never called.
"""

from __future__ import annotations

import torch

from gradprobe.downsample import ConvBN, forward_of
from gradprobe.models import register_model
from gradprobe.models.layers import FORMS
from gradprobe.models.transformer import Pointwise, Recipe, RecipeTransformer, Stem
from gradprobe.neuron import NeuronConfig

#: Reference DVS tau of Spikingformer and of CML-Spikingformer.
DVS_TAU = 1.5
CML_DVS_TAU = 1.75
_FOLLOWS = "DVS tau follows the variant unless tau= is given"


def default_tau(form: str, downsample: str) -> tuple[float, str]:
    """The reference membrane time constant for a form and variant, and where it comes from.

    Tau 2 on CIFAR/ImageNet. On DVS the reference uses 1.5 for Spikingformer and 1.75 for
    CML-Spikingformer (spec section 1), so ``maxpool_lif`` takes 1.75 and every other variant
    1.5: the one place where a variant changes something besides its sites (see the module
    docstring).

    Example:
        >>> default_tau("dvs", "maxpool_lif")
        (1.75, 'CML-Spikingformer DVS reference: DVS tau follows the variant unless tau= is given')
    """
    if form != "dvs":
        return 2.0, "Spikingformer reference"
    if forward_of(downsample) == "maxpool_lif":  # and its backward-only ablations
        return CML_DVS_TAU, f"CML-Spikingformer DVS reference: {_FOLLOWS}"
    return DVS_TAU, f"Spikingformer DVS reference: {_FOLLOWS}"


class SpikingformerStem(Stem):
    """The Spikingformer tokenizer regrouped into sites: four conv-BN-LIF stages (the last
    ``n_sites`` are downsampling sites) and a final conv-BN whose float output is the stream."""

    def build_tail(self, embed_dim: int, neuron: NeuronConfig | None) -> None:
        self.embed = ConvBN(embed_dim, embed_dim)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.embed(self.stages(x_seq))


class Spikingformer(RecipeTransformer):
    """Spikingformer-L-D with every tokenizer downsampling site built as variant ``downsample``.

    Pre-activation: a LIF before every projection, so every conv reads spikes and attention and
    MLP add BN floats to the residual stream. ``Conv1d`` q/k/v/proj without q/k/v bias and a
    ``Conv2d`` 1x1 MLP in every form; attention scale 0.125; tau per `default_tau`, which on
    DVS depends on the variant (``print(model)`` shows the tau in force and why). Takes the
    arguments of `RecipeTransformer`.
    """

    recipe = Recipe(
        stem=SpikingformerStem,
        lif="pre",
        pointwise=dict.fromkeys(
            FORMS, Pointwise(qkv="conv1d", qkv_bias=False, proj="conv1d", mlp="conv2d")
        ),
        attn_scale=dict.fromkeys(FORMS, 0.125),
        reference_tau=default_tau,
    )


def _cifar_heads(kwargs: dict) -> int:
    # The reference ymls use 12 heads on CIFAR10 and 8 on CIFAR100 for D = 384.
    return 8 if kwargs.get("num_classes") == 100 else 12


@register_model()
def spikingformer_4_256_cifar(**kwargs: object) -> Spikingformer:
    """Spikingformer-4-256 for CIFAR (32x32, 2 sites); 8 heads (our choice: head width 32).

    Example:
        >>> model = spikingformer_4_256_cifar(downsample="maxpool_lif", num_classes=100)
    """
    return Spikingformer.create("cifar", kwargs, depth=4, embed_dim=256, num_heads=8)


@register_model()
def spikingformer_2_384_cifar(**kwargs: object) -> Spikingformer:
    """Spikingformer-2-384 for CIFAR; 12 heads (8 when ``num_classes=100``), as the ymls.

    Example:
        >>> model = spikingformer_2_384_cifar(downsample="maxpool_lif")
    """
    return Spikingformer.create(
        "cifar", kwargs, depth=2, embed_dim=384, num_heads=_cifar_heads(kwargs)
    )


@register_model()
def spikingformer_4_384_cifar(**kwargs: object) -> Spikingformer:
    """Spikingformer-4-384 for CIFAR; 12 heads on CIFAR10, 8 when ``num_classes=100``.

    Example:
        >>> model = spikingformer_4_384_cifar(downsample="maxpool_lif", num_classes=10, T=4)
    """
    return Spikingformer.create(
        "cifar", kwargs, depth=4, embed_dim=384, num_heads=_cifar_heads(kwargs)
    )


@register_model()
def spikingformer_8_384_imagenet(**kwargs: object) -> Spikingformer:
    """Spikingformer-8-384 for ImageNet (224, 4 sites); 8 heads.

    Example:
        >>> model = spikingformer_8_384_imagenet(downsample="maxpool_lif")
    """
    return Spikingformer.create("imagenet", kwargs, depth=8, embed_dim=384, num_heads=8)


@register_model()
def spikingformer_8_512_imagenet(**kwargs: object) -> Spikingformer:
    """Spikingformer-8-512 for ImageNet; 8 heads.

    Example:
        >>> model = spikingformer_8_512_imagenet(downsample="maxpool_lif")
    """
    return Spikingformer.create("imagenet", kwargs, depth=8, embed_dim=512, num_heads=8)


@register_model()
def spikingformer_8_768_imagenet(**kwargs: object) -> Spikingformer:
    """Spikingformer-8-768 for ImageNet; 8 heads.

    Example:
        >>> model = spikingformer_8_768_imagenet(downsample="maxpool_lif")
    """
    return Spikingformer.create("imagenet", kwargs, depth=8, embed_dim=768, num_heads=8)


@register_model()
def spikingformer_2_256_dvs(**kwargs: object) -> Spikingformer:
    """Spikingformer-2-256 for 128x128 two-polarity event frames; 16 heads, 10 classes
    (CIFAR10-DVS; ``num_classes=11`` for DVS128 Gesture), tau per `default_tau`.

    Example:
        >>> model = spikingformer_2_256_dvs(downsample="maxpool_lif", T=16)  # tau 1.75
    """
    return Spikingformer.create("dvs", kwargs, depth=2, embed_dim=256, num_heads=16)
