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
1.5 for Spikingformer and 1.75 for CML-Spikingformer. With ``tau=None`` the DVS form therefore
takes 1.75 when ``downsample="maxpool_lif"`` and 1.5 for every other variant (the two variants
without reference code inherit Spikingformer's value); pass ``tau=`` to hold it fixed across
variants, so that only the site order differs.

Reference quirk mirrored (parameter counts equal spec section 3's integers): unused LayerNorms
``norm1``/``norm2`` per block (4·D), listed by `Spikingformer.unused_parameters`, dropped with
``legacy_params=False``. Left out: the DropPath that is created but never called.
"""

from __future__ import annotations

import torch
from torch import nn

from gradprobe.downsample import ConvBN, PoolSpec
from gradprobe.models import register_model
from gradprobe.models.layers import (
    SpikingMLP,
    SpikingSelfAttention,
    SpikingTransformer,
    TransformerBlock,
    get_form,
    init_transformer_weights,
    resolve_neuron,
    stem_stages,
)
from gradprobe.neuron import NeuronConfig

#: Reference DVS tau of Spikingformer and of CML-Spikingformer.
DVS_TAU = 1.5
CML_DVS_TAU = 1.75


def default_tau(form: str, downsample: str) -> float:
    """The reference membrane time constant for a form and variant (see the module docstring)."""
    if form != "dvs":
        return 2.0
    return CML_DVS_TAU if downsample == "maxpool_lif" else DVS_TAU


class SpikingformerStem(nn.Module):
    """The Spikingformer tokenizer regrouped into sites: four conv-BN-LIF stages (the last
    ``n_sites`` are downsampling sites) and a final conv-BN whose float output is the stream."""

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        n_sites: int,
        downsample: str,
        *,
        neuron: NeuronConfig | None = None,
        pool: PoolSpec | None = None,
    ) -> None:
        super().__init__()
        self.stages = stem_stages(
            in_channels, embed_dim, n_sites, downsample, neuron=neuron, pool=pool
        )
        self.embed = ConvBN(embed_dim, embed_dim)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.embed(self.stages(x_seq))


class Spikingformer(SpikingTransformer):
    """Spikingformer-L-D with every tokenizer downsampling site built as variant ``downsample``.

    Args:
        form: ``"cifar"``, ``"imagenet"`` or ``"dvs"``.
        depth: Number of blocks L.
        embed_dim: Embedding width D (divisible by 8 and by ``num_heads``).
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width over D.
        num_classes: Classes; ``None`` takes the form's (10, 1000, 10).
        T: Time steps for static input; ``None`` takes the form's (4, 4, 16).
        downsample: Variant at every site (default: the reference ``lif_maxpool``).
        in_channels: Input channels; ``None`` takes the form's (3, 3, 2).
        img_size: Input side; must be a multiple of 4 (CIFAR) or 16 (ImageNet/DVS).
        neuron: LIF settings; ``None`` is the reference LIF with `default_tau`.
        tau: Overrides the membrane time constant of every LIF.
        attn_threshold: Threshold of the attention LIF (reference 0.5).
        attn_scale: Attention scale (reference 0.125 in every form).
        legacy_params: Create the unused LayerNorms (see the module docstring).
        pool: Reduction geometry of the sites; ``None`` is MaxPool2d(3, 2, 1)'s.
    """

    def __init__(
        self,
        *,
        form: str,
        depth: int,
        embed_dim: int,
        num_heads: int,
        mlp_ratio: int = 4,
        num_classes: int | None = None,
        T: int | None = None,
        downsample: str = "lif_maxpool",
        in_channels: int | None = None,
        img_size: int | None = None,
        neuron: NeuronConfig | None = None,
        tau: float | None = None,
        attn_threshold: float = 0.5,
        attn_scale: float = 0.125,
        legacy_params: bool = True,
        pool: PoolSpec | None = None,
    ) -> None:
        super().__init__()
        spec = get_form(form)
        self._set_input(
            spec, downsample=downsample, T=T, in_channels=in_channels, img_size=img_size
        )
        self.form = form
        self.num_classes = spec.num_classes if num_classes is None else int(num_classes)
        self.neuron = resolve_neuron(neuron, tau, default_tau=default_tau(form, downsample))

        self.stem = SpikingformerStem(
            self.in_channels, embed_dim, spec.n_sites, downsample, neuron=self.neuron, pool=pool
        )
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(
                    SpikingSelfAttention(
                        embed_dim,
                        num_heads,
                        scale=attn_scale,
                        qkv_kind="conv1d",
                        qkv_bias=False,
                        proj_kind="conv1d",
                        pre_lif=True,
                        post_lif=False,
                        neuron=self.neuron,
                        attn_threshold=attn_threshold,
                    ),
                    SpikingMLP(
                        embed_dim,
                        mlp_ratio * embed_dim,
                        kind="conv2d",
                        pre_lif=True,
                        neuron=self.neuron,
                    ),
                    embed_dim,
                    legacy_norms=legacy_params,
                )
                for _ in range(depth)
            )
        )
        self.head = nn.Linear(embed_dim, self.num_classes)
        self.apply(init_transformer_weights)


def _build(form: str, defaults: dict, kwargs: dict) -> Spikingformer:
    return Spikingformer(form=form, **{**defaults, **kwargs})


def _cifar_heads(kwargs: dict) -> int:
    # The reference ymls use 12 heads on CIFAR10 and 8 on CIFAR100 for D = 384.
    return 8 if kwargs.get("num_classes") == 100 else 12


@register_model()
def spikingformer_4_256_cifar(**kwargs: object) -> Spikingformer:
    """Spikingformer-4-256 for CIFAR (32x32, 2 sites); 8 heads (our choice: head width 32).

    Example:
        >>> model = spikingformer_4_256_cifar(downsample="maxpool_lif", num_classes=100)
    """
    return _build("cifar", dict(depth=4, embed_dim=256, num_heads=8), kwargs)


@register_model()
def spikingformer_2_384_cifar(**kwargs: object) -> Spikingformer:
    """Spikingformer-2-384 for CIFAR; 12 heads (8 when ``num_classes=100``), as the ymls.

    Example:
        >>> model = spikingformer_2_384_cifar(downsample="maxpool_lif")
    """
    return _build("cifar", dict(depth=2, embed_dim=384, num_heads=_cifar_heads(kwargs)), kwargs)


@register_model()
def spikingformer_4_384_cifar(**kwargs: object) -> Spikingformer:
    """Spikingformer-4-384 for CIFAR; 12 heads on CIFAR10, 8 when ``num_classes=100``.

    Example:
        >>> model = spikingformer_4_384_cifar(downsample="maxpool_lif", num_classes=10, T=4)
    """
    return _build("cifar", dict(depth=4, embed_dim=384, num_heads=_cifar_heads(kwargs)), kwargs)


@register_model()
def spikingformer_8_384_imagenet(**kwargs: object) -> Spikingformer:
    """Spikingformer-8-384 for ImageNet (224, 4 sites); 8 heads.

    Example:
        >>> model = spikingformer_8_384_imagenet(downsample="maxpool_lif")
    """
    return _build("imagenet", dict(depth=8, embed_dim=384, num_heads=8), kwargs)


@register_model()
def spikingformer_8_512_imagenet(**kwargs: object) -> Spikingformer:
    """Spikingformer-8-512 for ImageNet; 8 heads.

    Example:
        >>> model = spikingformer_8_512_imagenet(downsample="maxpool_lif")
    """
    return _build("imagenet", dict(depth=8, embed_dim=512, num_heads=8), kwargs)


@register_model()
def spikingformer_8_768_imagenet(**kwargs: object) -> Spikingformer:
    """Spikingformer-8-768 for ImageNet; 8 heads.

    Example:
        >>> model = spikingformer_8_768_imagenet(downsample="maxpool_lif")
    """
    return _build("imagenet", dict(depth=8, embed_dim=768, num_heads=8), kwargs)


@register_model()
def spikingformer_2_256_dvs(**kwargs: object) -> Spikingformer:
    """Spikingformer-2-256 for 128x128 two-polarity event frames; 16 heads, 10 classes
    (CIFAR10-DVS; ``num_classes=11`` for DVS128 Gesture), tau per `default_tau`.

    Example:
        >>> model = spikingformer_2_256_dvs(downsample="maxpool_lif", T=16)  # tau 1.75
    """
    return _build("dvs", dict(depth=2, embed_dim=256, num_heads=16), kwargs)
