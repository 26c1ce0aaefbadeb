"""One builder behind Spikformer and Spikingformer: a family is a `Recipe`, data.

Both families (and CML's versions of them, which differ only at the sites) build the same
network: a stem of four conv-BN-LIF stages whose last ``n_sites`` are downsampling sites and a
family-specific last layer, then ``depth`` blocks ``x + SSA(x)``, ``x + MLP(x)``, then a mean over
tokens and a Linear head (`SpikingTransformer`). What a family chooses is a `Recipe`: where the
LIFs sit, the pointwise layer types and attention scale of each form, the reference tau, and the
unused parameters its reference creates. `RecipeTransformer` builds any recipe, so a family file
holds its recipe, its stem's last layer and its registered factories.

Modules are created in the references' order, so state-dict keys, parameter counts and the
random initialisation follow from the recipe alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

import torch
from torch import nn

from gradprobe.downsample import ConvBNLIF, PoolSpec, build_downsample
from gradprobe.models.base import check_sizes
from gradprobe.models.layers import (
    PointwiseKind,
    SpikingMLP,
    SpikingSelfAttention,
    SpikingTransformer,
    TransformerBlock,
    get_form,
    init_transformer_weights,
    resolve_neuron,
)
from gradprobe.neuron import NeuronConfig


class Stem(nn.Module):
    """Four conv-BN-LIF stages ``C → D/8 → D/4 → D/2 → D`` named ``stage1``..``stage4``, the last
    ``n_sites`` of them downsampling sites of variant ``downsample`` (2 on CIFAR, 4 on
    ImageNet/DVS), then the family's last layer, which subclasses add in `build_tail` and use in
    ``forward``."""

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
        if embed_dim % 8:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by 8 (stem widths D/8..D)")
        widths = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        stages = OrderedDict()
        for i in range(4):
            if i >= 4 - n_sites:
                stages[f"stage{i + 1}"] = build_downsample(
                    downsample, widths[i], widths[i + 1], neuron=neuron, pool=pool
                )
            else:
                stages[f"stage{i + 1}"] = ConvBNLIF(widths[i], widths[i + 1], neuron=neuron)
        self.stages = nn.Sequential(stages)
        self.build_tail(embed_dim, neuron)

    def build_tail(self, embed_dim: int, neuron: NeuronConfig | None) -> None:
        """Add the layer(s) after the stages, at width ``embed_dim``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Pointwise:
    """The pointwise layer types of one reference file (see `PointwiseBN`).

    Attributes:
        qkv: Layer type of q, k and v.
        qkv_bias: Whether q, k and v have a bias.
        proj: Layer type of the attention's output projection (always with bias).
        mlp: Layer type of both MLP layers.
    """

    qkv: PointwiseKind
    qkv_bias: bool
    proj: PointwiseKind
    mlp: PointwiseKind


@dataclass(frozen=True)
class Recipe:
    """What a spiking-transformer family chooses; `RecipeTransformer` builds the rest.

    Attributes:
        stem: The stem class: `Stem` plus the family's last layer.
        lif: ``"post"``: a LIF after every BN, so each branch outputs spikes (Spikformer);
            ``"pre"``: a LIF before every projection, so each branch outputs BN floats and
            every projection reads spikes (Spikingformer).
        pointwise: Layer types by form (``"cifar"``, ``"imagenet"``, ``"dvs"``).
        attn_scale: Attention scale by form.
        reference_tau: ``(form, downsample) -> (tau, where it comes from)``: the tau of every
            LIF when neither ``neuron`` nor ``tau`` is given.
        legacy_extras: Forms whose reference also creates a ``pos_embed`` of N x D and a final
            LayerNorm ``norm`` that forward never uses.
    """

    stem: type[Stem]
    lif: Literal["post", "pre"]
    pointwise: Mapping[str, Pointwise]
    attn_scale: Mapping[str, float]
    reference_tau: Callable[[str, str], tuple[float, str]]
    legacy_extras: frozenset[str] = frozenset()


class RecipeTransformer(SpikingTransformer):
    """A spiking transformer built from its class's `recipe`, every stem site of variant
    ``downsample``.

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
        neuron: LIF settings; ``None`` is the reference LIF with the recipe's reference tau.
        tau: Overrides the membrane time constant of every LIF.
        attn_threshold: Threshold of the attention LIF (reference 0.5).
        attn_scale: Attention scale; ``None`` takes the recipe's for the form.
        legacy_params: Create the parameters the reference creates but never uses (listed by
            `unused_parameters`): the per-block LayerNorms and the recipe's ``legacy_extras``.
        pool: Reduction geometry of the sites; ``None`` is MaxPool2d(3, 2, 1)'s.

    Attributes:
        neuron: The settings every LIF was built with.
        tau_source: Where ``neuron.tau`` comes from (shown by ``print(model)``).
    """

    recipe: ClassVar[Recipe]

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
        owner = type(self).__name__
        check_sizes(owner, embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio)
        check_sizes(owner, at_least=0, depth=depth)
        recipe = self.recipe
        spec = get_form(form)
        self._set_input(
            spec, downsample=downsample, T=T, in_channels=in_channels, img_size=img_size
        )
        self.form = form
        self.num_classes = spec.num_classes if num_classes is None else int(num_classes)
        reference_tau, self.tau_source = recipe.reference_tau(form, downsample)
        if tau is not None or neuron is not None:
            self.tau_source = "set by tau=" if tau is not None else "set by neuron="
        self.neuron = resolve_neuron(neuron, tau, default_tau=reference_tau)
        layout = recipe.pointwise[form]
        scale = recipe.attn_scale[form] if attn_scale is None else attn_scale
        pre = recipe.lif == "pre"

        self.stem = recipe.stem(
            self.in_channels, embed_dim, spec.n_sites, downsample, neuron=self.neuron, pool=pool
        )
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(
                    SpikingSelfAttention(
                        embed_dim,
                        num_heads,
                        scale=scale,
                        qkv_kind=layout.qkv,
                        qkv_bias=layout.qkv_bias,
                        proj_kind=layout.proj,
                        pre_lif=pre,
                        post_lif=not pre,
                        neuron=self.neuron,
                        attn_threshold=attn_threshold,
                    ),
                    SpikingMLP(
                        embed_dim,
                        mlp_ratio * embed_dim,
                        kind=layout.mlp,
                        pre_lif=pre,
                        neuron=self.neuron,
                    ),
                    embed_dim,
                    legacy_norms=legacy_params,
                )
                for _ in range(depth)
            )
        )
        extras = legacy_params and form in recipe.legacy_extras
        if extras:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2, embed_dim))
            self.norm = nn.LayerNorm(embed_dim)
            self.legacy_parameter_names = ("pos_embed", "norm.weight", "norm.bias")
        self.head = nn.Linear(embed_dim, self.num_classes)
        self.apply(init_transformer_weights)
        if extras:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    @classmethod
    def create(cls, form: str, kwargs: dict, **size: int) -> Self:
        """A registered size: ``size`` (``depth``, ``embed_dim``, ``num_heads``) are defaults
        that ``kwargs`` may override (the tests build every factory at tiny sizes)."""
        return cls(form=form, **{**size, **kwargs})

    def extra_repr(self) -> str:
        return (
            f"form={self.form!r}, downsample={self.downsample!r}, T={self.T}, "
            f"tau={self.neuron.tau} ({self.tau_source})"
        )
