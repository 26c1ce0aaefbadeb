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
from torch import nn

from gradprobe.downsample import ConvBNLIF, PoolSpec
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

# Pointwise layer types of the reference files, per form: q/k/v (and its bias), proj, MLP.
_LAYOUT = {
    "cifar": dict(qkv_kind="linear", qkv_bias=True, proj_kind="linear", mlp_kind="linear"),
    "imagenet": dict(qkv_kind="conv1d", qkv_bias=False, proj_kind="conv1d", mlp_kind="conv2d"),
    "dvs": dict(qkv_kind="conv1d", qkv_bias=False, proj_kind="conv1d", mlp_kind="conv1d"),
}


class SpikformerStem(nn.Module):
    """SPS: four conv-BN-LIF stages (the last ``n_sites`` are downsampling sites), then the RPE
    conv-BN-LIF whose spikes are added to the stage-4 spikes (values in {0, 1, 2})."""

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
        self.rpe = ConvBNLIF(embed_dim, embed_dim, neuron=neuron)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        x_seq = self.stages(x_seq)
        return x_seq + self.rpe(x_seq)


class Spikformer(SpikingTransformer):
    """Spikformer-L-D with every SPS downsampling site built as variant ``downsample``.

    Args:
        form: ``"cifar"``, ``"imagenet"`` or ``"dvs"``: stem depth, layer types and defaults.
        depth: Number of blocks L.
        embed_dim: Embedding width D (divisible by 8 and by ``num_heads``).
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width over D.
        num_classes: Classes; ``None`` takes the form's (10, 1000, 10).
        T: Time steps for static input; ``None`` takes the form's (4, 4, 16).
        downsample: Variant at every site (default: the reference ``lif_maxpool``).
        in_channels: Input channels; ``None`` takes the form's (3, 3, 2).
        img_size: Input side; must be a multiple of 4 (CIFAR) or 16 (ImageNet/DVS).
        neuron: LIF settings; ``None`` is the reference LIF (tau 2 in every Spikformer form).
        tau: Overrides the membrane time constant of every LIF.
        attn_threshold: Threshold of the attention LIF (reference 0.5).
        attn_scale: Attention scale; ``None`` is 0.125, or 0.25 on DVS.
        legacy_params: Create the unused reference parameters (see the module docstring).
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
        attn_scale: float | None = None,
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
        self.neuron = resolve_neuron(neuron, tau, default_tau=2.0)
        layout = _LAYOUT[form]
        scale = (0.25 if form == "dvs" else 0.125) if attn_scale is None else attn_scale

        self.stem = SpikformerStem(
            self.in_channels, embed_dim, spec.n_sites, downsample, neuron=self.neuron, pool=pool
        )
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(
                    SpikingSelfAttention(
                        embed_dim,
                        num_heads,
                        scale=scale,
                        qkv_kind=layout["qkv_kind"],
                        qkv_bias=layout["qkv_bias"],
                        proj_kind=layout["proj_kind"],
                        pre_lif=False,
                        post_lif=True,
                        neuron=self.neuron,
                        attn_threshold=attn_threshold,
                    ),
                    SpikingMLP(
                        embed_dim,
                        mlp_ratio * embed_dim,
                        kind=layout["mlp_kind"],
                        pre_lif=False,
                        neuron=self.neuron,
                    ),
                    embed_dim,
                    legacy_norms=legacy_params,
                )
                for _ in range(depth)
            )
        )
        if legacy_params and form == "dvs":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2, embed_dim))
            self.norm = nn.LayerNorm(embed_dim)
            self.legacy_parameter_names = ("pos_embed", "norm.weight", "norm.bias")
        self.head = nn.Linear(embed_dim, self.num_classes)
        self.apply(init_transformer_weights)
        if legacy_params and form == "dvs":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)


def _build(form: str, defaults: dict, kwargs: dict) -> Spikformer:
    return Spikformer(form=form, **{**defaults, **kwargs})


@register_model()
def spikformer_4_256_cifar(**kwargs: object) -> Spikformer:
    """Spikformer-4-256 for CIFAR (32x32, 2 sites); 8 heads (our choice: 256 is not divisible
    by the yml's 12; head width 32).

    Example:
        >>> model = spikformer_4_256_cifar(downsample="maxpool_lif", num_classes=100)
    """
    return _build("cifar", dict(depth=4, embed_dim=256, num_heads=8), kwargs)


@register_model()
def spikformer_2_384_cifar(**kwargs: object) -> Spikformer:
    """Spikformer-2-384 for CIFAR; 12 heads as in the reference yml.

    Example:
        >>> model = spikformer_2_384_cifar(downsample="maxpool_lif")
    """
    return _build("cifar", dict(depth=2, embed_dim=384, num_heads=12), kwargs)


@register_model()
def spikformer_4_384_cifar(**kwargs: object) -> Spikformer:
    """Spikformer-4-384 for CIFAR, the paper's main CIFAR model; 12 heads (reference yml).

    Example:
        >>> model = spikformer_4_384_cifar(downsample="maxpool_lif", num_classes=10, T=4)
    """
    return _build("cifar", dict(depth=4, embed_dim=384, num_heads=12), kwargs)


@register_model()
def spikformer_8_384_imagenet(**kwargs: object) -> Spikformer:
    """Spikformer-8-384 for ImageNet (224, 4 sites); 8 heads as the reference factory.

    Example:
        >>> model = spikformer_8_384_imagenet(downsample="maxpool_lif")
    """
    return _build("imagenet", dict(depth=8, embed_dim=384, num_heads=8), kwargs)


@register_model()
def spikformer_8_512_imagenet(**kwargs: object) -> Spikformer:
    """Spikformer-8-512 for ImageNet, the reference factory's default; 8 heads.

    Example:
        >>> model = spikformer_8_512_imagenet(downsample="maxpool_lif")
    """
    return _build("imagenet", dict(depth=8, embed_dim=512, num_heads=8), kwargs)


@register_model()
def spikformer_8_768_imagenet(**kwargs: object) -> Spikformer:
    """Spikformer-8-768 for ImageNet; 8 heads as the reference factory.

    Example:
        >>> model = spikformer_8_768_imagenet(downsample="maxpool_lif")
    """
    return _build("imagenet", dict(depth=8, embed_dim=768, num_heads=8), kwargs)


@register_model()
def spikformer_2_256_dvs(**kwargs: object) -> Spikformer:
    """Spikformer-2-256 for 128x128 two-polarity event frames; 16 heads, attention scale 0.25,
    tau 2, 10 classes (CIFAR10-DVS; pass ``num_classes=11`` for DVS128 Gesture).

    Example:
        >>> model = spikformer_2_256_dvs(downsample="maxpool_lif", T=16)
    """
    return _build("dvs", dict(depth=2, embed_dim=256, num_heads=16), kwargs)
