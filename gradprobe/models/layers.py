"""Multi-step pieces shared by the spiking-transformer families (Spikformer, Spikingformer).

Both families stack the same three things on a spiking stem: spiking self-attention (SSA), a
two-layer MLP and a residual ``x + f(x)``. They differ only in where the LIFs sit (Spikformer:
after every BN, "post-activation"; Spikingformer: before every projection, "pre-activation") and
in which pointwise layer the reference code uses (``Linear``, ``Conv1d`` or ``Conv2d`` 1x1). Those
differences are arguments here, so the attention and MLP maths exist once.

The token stream is kept as a feature map ``[T, B, C, H, W]`` between modules; attention
flattens ``H·W`` into ``N`` tokens internally.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from spikingjelly.activation_based import layer
from torch import nn

from gradprobe.downsample import check_sequence
from gradprobe.models.base import SpikingClassifier
from gradprobe.neuron import NeuronConfig, make_neuron

PointwiseKind = Literal["linear", "conv1d", "conv2d"]


@dataclass(frozen=True)
class Form:
    """Input form of a reference model: what it is fed and how many sites its stem has."""

    img_size: int
    in_channels: int
    n_sites: int
    num_classes: int
    T: int


#: CIFAR 32x32 RGB (patch 4: two sites), ImageNet 224 RGB and DVS 128x128 two-polarity event
#: frames (patch 16: four sites). DVS models default to T = 16 frames, the others to T = 4.
FORMS = {
    "cifar": Form(img_size=32, in_channels=3, n_sites=2, num_classes=10, T=4),
    "imagenet": Form(img_size=224, in_channels=3, n_sites=4, num_classes=1000, T=4),
    "dvs": Form(img_size=128, in_channels=2, n_sites=4, num_classes=10, T=16),
}


def get_form(form: str) -> Form:
    if form not in FORMS:
        raise ValueError(f"unknown input form {form!r}; choices: {', '.join(FORMS)}")
    return FORMS[form]


def resolve_neuron(
    neuron: NeuronConfig | None, tau: float | None, default_tau: float
) -> NeuronConfig:
    """The neuron settings of a model: an explicit ``tau`` wins, then ``neuron.tau``, then the
    family's reference tau (``default_tau``) applied to the reference LIF."""
    if neuron is None:
        neuron = NeuronConfig(tau=default_tau)
    return neuron if tau is None else neuron.replace(tau=float(tau))


class PointwiseBN(nn.Module):
    """A pointwise projection ``C → C'`` followed by BatchNorm, on ``[T, B, C, H, W]``.

    ``kind`` only chooses the module type the reference used, so that weight shapes and the
    state-dict layout match it: ``"linear"`` (``Linear`` + ``BatchNorm1d``, Spikformer CIFAR),
    ``"conv1d"`` (``Conv1d(k=1)`` + ``BatchNorm1d``) or ``"conv2d"`` (``Conv2d(k=1)`` +
    ``BatchNorm2d``). The maths is the same in all three.
    """

    def __init__(self, in_dim: int, out_dim: int, *, bias: bool, kind: PointwiseKind) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.proj = layer.Linear(in_dim, out_dim, bias=bias, step_mode="m")
            self.bn = layer.BatchNorm1d(out_dim, step_mode="m")
        elif kind == "conv1d":
            self.proj = layer.Conv1d(in_dim, out_dim, 1, bias=bias, step_mode="m")
            self.bn = layer.BatchNorm1d(out_dim, step_mode="m")
        elif kind == "conv2d":
            self.proj = layer.Conv2d(in_dim, out_dim, 1, bias=bias, step_mode="m")
            self.bn = layer.BatchNorm2d(out_dim, step_mode="m")
        else:
            raise ValueError(f"unknown pointwise kind {kind!r}; choices: linear, conv1d, conv2d")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        T, B, _, H, W = x_seq.shape
        if self.kind == "conv2d":
            return self.bn(self.proj(x_seq))
        tokens = x_seq.flatten(3)  # [T, B, C, N]
        if self.kind == "linear":
            tokens = self.proj(tokens.transpose(-1, -2)).transpose(-1, -2)
        else:
            tokens = self.proj(tokens)
        return self.bn(tokens.contiguous()).reshape(T, B, -1, H, W)


class SpikingSelfAttention(nn.Module):
    """Spiking self-attention without softmax: ``(Q·Kᵀ)·V·scale`` on spike tensors.

    Args:
        dim: Embedding width D.
        num_heads: Heads; D must be divisible by it.
        scale: Attention scale (0.125 in every reference except Spikformer CIFAR10-DVS, 0.25).
        qkv_kind: Pointwise layer type of q/k/v (see `PointwiseBN`).
        qkv_bias: Bias on q/k/v (Spikformer CIFAR only).
        proj_kind: Pointwise layer type of the output projection (always with bias).
        pre_lif: Spike the (non-binary) input first — Spikingformer's ``proj_lif``.
        post_lif: Spike the projection's BN output — Spikformer's ``proj_lif``.
        neuron: Settings of every LIF here.
        attn_threshold: Threshold of the LIF on the attention output (reference: 0.5).

    Q, K and V are binary, so every entry of ``Q·Kᵀ·V`` is an integer and both association
    orders are exact; the cheaper one is used (the ImageNet reference writes ``Q·(Kᵀ·V)``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        scale: float = 0.125,
        qkv_kind: PointwiseKind = "conv1d",
        qkv_bias: bool = False,
        proj_kind: PointwiseKind = "conv1d",
        pre_lif: bool = False,
        post_lif: bool = True,
        neuron: NeuronConfig | None = None,
        attn_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = scale
        self.in_lif = make_neuron(neuron) if pre_lif else None
        self.q = PointwiseBN(dim, dim, bias=qkv_bias, kind=qkv_kind)
        self.q_lif = make_neuron(neuron)
        self.k = PointwiseBN(dim, dim, bias=qkv_bias, kind=qkv_kind)
        self.k_lif = make_neuron(neuron)
        self.v = PointwiseBN(dim, dim, bias=qkv_bias, kind=qkv_kind)
        self.v_lif = make_neuron(neuron)
        self.attn_lif = make_neuron(neuron, v_threshold=attn_threshold)
        self.proj = PointwiseBN(dim, dim, bias=True, kind=proj_kind)
        self.out_lif = make_neuron(neuron) if post_lif else None

    def _heads(self, x_seq: torch.Tensor) -> torch.Tensor:
        T, B, C, _, _ = x_seq.shape
        # channel c belongs to head c // (C / heads), as in the references
        return x_seq.reshape(T, B, self.num_heads, C // self.num_heads, -1).transpose(-1, -2)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.in_lif is not None:
            x_seq = self.in_lif(x_seq)
        q = self._heads(self.q_lif(self.q(x_seq)))  # [T, B, heads, N, d]
        k = self._heads(self.k_lif(self.k(x_seq)))
        v = self._heads(self.v_lif(self.v(x_seq)))
        kt = k.transpose(-2, -1)
        n_tokens, head_dim = q.shape[-2], q.shape[-1]
        attn = (q @ (kt @ v) if n_tokens > head_dim else (q @ kt) @ v) * self.scale
        out = self.proj(self.attn_lif(self.merge_heads(attn, x_seq.shape)))
        return out if self.out_lif is None else self.out_lif(out)

    def merge_heads(self, attn: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """``[T, B, heads, N, d]`` → ``[T, B, C, H, W]`` of ``shape``, the inverse of `_heads`."""
        T, B, C, H, W = shape
        return attn.transpose(-1, -2).reshape(T, B, C, H, W)


class SpikingMLP(nn.Module):
    """Two pointwise layers with BN, ``D → hidden → D``, biases on both.

    Args:
        dim: Embedding width D.
        hidden_dim: Hidden width (reference: 4·D).
        kind: Pointwise layer type (see `PointwiseBN`).
        pre_lif: Spikingformer order, ``LIF → fc1-BN → LIF → fc2-BN`` (float output).
            Otherwise Spikformer order, ``fc1-BN → LIF → fc2-BN → LIF`` (spike output).
        neuron: Settings of every LIF here.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        *,
        kind: PointwiseKind = "conv2d",
        pre_lif: bool = False,
        neuron: NeuronConfig | None = None,
    ) -> None:
        super().__init__()
        self.pre_lif = pre_lif
        self.fc1 = PointwiseBN(dim, hidden_dim, bias=True, kind=kind)
        self.fc2 = PointwiseBN(hidden_dim, dim, bias=True, kind=kind)
        self.lif1 = make_neuron(neuron)
        self.lif2 = make_neuron(neuron)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.pre_lif:
            return self.fc2(self.lif2(self.fc1(self.lif1(x_seq))))
        return self.lif2(self.fc2(self.lif1(self.fc1(x_seq))))


class TransformerBlock(nn.Module):
    """``x + SSA(x)`` then ``x + MLP(x)``, with no normalisation in the forward pass.

    Args:
        attn: The attention module.
        mlp: The MLP module.
        dim: Embedding width, for the legacy norms.
        legacy_norms: Create the LayerNorms ``norm1``/``norm2`` that both reference codebases
            build but never call (4·D parameters per block). They keep parameter counts equal to
            the references' integers; they take no part in forward.
    """

    def __init__(
        self, attn: nn.Module, mlp: nn.Module, dim: int, legacy_norms: bool = True
    ) -> None:
        super().__init__()
        self.attn = attn
        self.mlp = mlp
        if legacy_norms:
            self.norm1 = nn.LayerNorm(dim)
            self.norm2 = nn.LayerNorm(dim)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        x_seq = x_seq + self.attn(x_seq)
        return x_seq + self.mlp(x_seq)


def init_transformer_weights(module: nn.Module) -> None:
    """Reference init: Linear weights trunc-normal(std .02) with zero bias, LayerNorm (1, 0);
    convolutions keep PyTorch's default."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def check_img_size(img_size: int, form: Form, model: str) -> int:
    """The token-grid side for ``img_size``; rejects sides the stem cannot halve at every site.

    The references hard-code their grids (e.g. 64/32/16 for 128x128 DVS input); here the grid
    is computed, so any positive multiple of ``2 ** form.n_sites`` works.
    """
    factor = 2**form.n_sites
    if img_size < factor or img_size % factor:
        raise ValueError(
            f"img_size {img_size} is not supported by {model}: its {form.n_sites} downsampling "
            f"sites need a positive multiple of {factor} (the reference uses {form.img_size})"
        )
    return img_size // factor


class SpikingTransformer(SpikingClassifier):
    """Stem → blocks → mean over tokens → Linear, per time step (``[T, B, K]``).

    Subclasses build ``self.stem`` (containing every `DownsampleSite`), ``self.blocks`` and
    ``self.head``. The head is linear, so the mean over T that `forward` takes equals the
    references' "mean over T, then Linear".
    """

    stem: nn.Module
    blocks: nn.Sequential
    head: nn.Linear
    #: Parameters created for parameter-count parity but never used in forward: name suffixes
    #: (the per-block LayerNorms) and full names (e.g. Spikformer DVS's ``pos_embed``).
    legacy_parameter_suffixes: tuple[str, ...] = (
        ".norm1.weight",
        ".norm1.bias",
        ".norm2.weight",
        ".norm2.bias",
    )
    legacy_parameter_names: tuple[str, ...] = ()

    def _set_input(
        self,
        form: Form,
        *,
        downsample: str,
        T: int | None,
        in_channels: int | None,
        img_size: int | None,
    ) -> None:
        """Record the model's input attributes, filling ``None`` from the reference form."""
        self.downsample = downsample
        self.T = form.T if T is None else int(T)
        if self.T < 1:
            raise ValueError(f"T must be >= 1, got {self.T}")
        self.in_channels = form.in_channels if in_channels is None else int(in_channels)
        self.img_size = form.img_size if img_size is None else int(img_size)
        self.n_sites = form.n_sites
        self.grid_size = check_img_size(self.img_size, form, type(self).__name__)

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_sequence(x_seq)
        if x_seq.shape[2] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects {self.in_channels} input channels, "
                f"got input of shape {tuple(x_seq.shape)}"
            )
        factor = 2**self.n_sites
        if x_seq.shape[-1] % factor or x_seq.shape[-2] % factor:
            raise ValueError(
                f"{type(self).__name__} halves the input {self.n_sites} times; its height and "
                f"width must be multiples of {factor}, got {tuple(x_seq.shape[-2:])}"
            )
        x_seq = self.blocks(self.stem(x_seq))
        # the mean over tokens reduces contiguous memory, in the references' order
        return self.head(x_seq.contiguous().flatten(3).mean(3))

    def unused_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters the reference creates but never uses (see the class docstrings)."""
        for name, param in self.named_parameters():
            if name.endswith(self.legacy_parameter_suffixes) or name in self.legacy_parameter_names:
                yield name, param
