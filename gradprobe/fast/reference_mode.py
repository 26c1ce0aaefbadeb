"""Reference-mode forwards: compute the way the official CIFAR code computes, on our modules.

Speed claims need an honest baseline. The official Spikformer and Spikingformer CIFAR files
(spec section 2.1/2.2) hold the same parameters as our backbones but lay the computation out
differently, and that layout costs time:

* the static image is copied T times (``repeat``, not a broadcast view);
* Spikformer keeps the token stream as ``[T, B, N, C]``: every Linear runs on ``[T·B, N, C]`` and
  every BatchNorm1d on a transposed view, each followed by ``.reshape(...).contiguous()`` copies;
  q, k and v are permuted into heads with another ``.contiguous()`` copy each;
* both compute attention as ``(Q·Kᵀ)·V`` (an N x N matrix, N = 64 tokens on CIFAR) where
  ``Q·(Kᵀ·V)`` (a d x d matrix, d = 32) is cheaper and exact on binary spikes;
* every LIF steps through T in Python, concatenating its spikes and membrane potentials
  (`LoopLIFNode`).

`install_reference_mode` swaps in classes (`gradprobe.fast.swap`) whose forwards follow exactly
that sequence of reshapes and products (our code, written from the facts in the spec): on any
`SpikingClassifier` the references' ``repeat`` over T, and on a Spikformer or Spikingformer CIFAR
model their layouts of stem, attention and MLP; `gradprobe.fast.swap.restore_modules` takes them
out. ``print(model)`` names them (``ReferenceSpikformer``, ``ReferenceTokenSelfAttention``...).
The stems' stages already run as the references do (flatten T·B around each conv/BN, reshape
back), so they keep their forwards and their probe hooks. Other models and forms (ImageNet, DVS, ResNet-19,
Spikeformer) keep their forwards; for them reference mode differs only in the LIF loop and the
``repeat``.
"""

from __future__ import annotations

import functools

import torch
from spikingjelly.activation_based import neuron
from torch import nn

from gradprobe.fast.swap import plain_class, replaces, swap_class, swap_modules
from gradprobe.models.base import SpikingClassifier
from gradprobe.models.layers import SpikingMLP, SpikingSelfAttention, SpikingTransformer
from gradprobe.models.spikformer import Spikformer, SpikformerStem


@replaces(neuron.LIFNode)
class LoopLIFNode(neuron.LIFNode):
    """LIF that steps through T in Python, as the reference code does on CPU (same maths).

    Like spikingjelly 0.0.0.0.12's ``MultiStepLIFNode`` with its ``'torch'`` backend, which is
    what the official code runs off CUDA, it concatenates each step's spikes and also each
    step's membrane potential, kept as ``v_seq`` until ``reset_net`` clears it: the references
    pay for that copy, and for its memory, in every step.
    """

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        spikes, potentials = [], []
        for x in x_seq:
            spikes.append(self.single_step_forward(x).unsqueeze(0))
            potentials.append(self.v.unsqueeze(0))
        self.v_seq = torch.cat(potentials, 0)
        return torch.cat(spikes, 0)


def _repeat_sequence(self: SpikingClassifier, x: torch.Tensor) -> torch.Tensor:
    # The references materialise T copies of a static image batch.
    if x.dim() == 4:
        return x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
    return SpikingClassifier.to_sequence(self, x)


def _tokens_forward_seq(self: Spikformer, x_seq: torch.Tensor) -> torch.Tensor:
    tokens = self.blocks(self.stem(x_seq))  # [T, B, N, C]
    return self.head(tokens.mean(2))


def _sps_tokens_forward(self: SpikformerStem, x_seq: torch.Tensor) -> torch.Tensor:
    x_seq = self.stages(x_seq)
    x_seq = self.rpe(x_seq) + x_seq
    return x_seq.flatten(-2).transpose(-1, -2)  # [T, B, N, C]


def _linear_bn_tokens(
    pointwise: nn.Module, flat: torch.Tensor, T: int, contiguous: bool = True
) -> torch.Tensor:
    """Spikformer CIFAR's ``bn(linear(x).transpose).transpose.reshape(T, B, N, C).contiguous()``
    (q, k, v, fc1, fc2); its output projection skips the final ``.contiguous()``."""
    y = nn.Linear.forward(pointwise.proj, flat)
    y = nn.BatchNorm1d.forward(pointwise.bn, y.transpose(-1, -2)).transpose(-1, -2)
    y = y.reshape(T, -1, *y.shape[1:])
    return y.contiguous() if contiguous else y


def _ssa_tokens_forward(self: SpikingSelfAttention, x: torch.Tensor) -> torch.Tensor:
    T, B, N, C = x.shape
    heads = self.num_heads
    flat = x.flatten(0, 1)

    def branch(pointwise: nn.Module, lif: nn.Module) -> torch.Tensor:
        y = lif(_linear_bn_tokens(pointwise, flat, T))
        return y.reshape(T, B, N, heads, C // heads).permute(0, 1, 3, 2, 4).contiguous()

    q, k, v = branch(self.q, self.q_lif), branch(self.k, self.k_lif), branch(self.v, self.v_lif)
    out = ((q @ k.transpose(-2, -1)) * self.scale) @ v
    out = self.attn_lif(out.transpose(2, 3).reshape(T, B, N, C).contiguous())
    return self.out_lif(_linear_bn_tokens(self.proj, out.flatten(0, 1), T, contiguous=False))


def _mlp_tokens_forward(self: SpikingMLP, x: torch.Tensor) -> torch.Tensor:
    T = x.shape[0]
    x = self.lif1(_linear_bn_tokens(self.fc1, x.flatten(0, 1), T))
    return self.lif2(_linear_bn_tokens(self.fc2, x.flatten(0, 1), T))


def _ssa_map_forward(self: SpikingSelfAttention, x: torch.Tensor) -> torch.Tensor:
    # Spikingformer CIFAR: LIF, then Conv1d-BN1d-LIF per q/k/v on [T·B, C, N].
    T, B, C, H, W = x.shape
    heads = self.num_heads
    flat = self.in_lif(x).flatten(3).flatten(0, 1)

    def branch(pointwise: nn.Module, lif: nn.Module) -> torch.Tensor:
        y = nn.Conv1d.forward(pointwise.proj, flat)
        y = lif(nn.BatchNorm1d.forward(pointwise.bn, y).reshape(T, B, C, -1))
        return y.transpose(-1, -2).reshape(T, B, -1, heads, C // heads).permute(0, 1, 3, 2, 4)

    q, k, v = branch(self.q, self.q_lif), branch(self.k, self.k_lif), branch(self.v, self.v_lif)
    out = ((q @ k.transpose(-2, -1)) @ v) * self.scale
    out = self.attn_lif(out.transpose(3, 4).reshape(T, B, C, -1)).flatten(0, 1)
    out = nn.Conv1d.forward(self.proj.proj, out)
    return nn.BatchNorm1d.forward(self.proj.bn, out).reshape(T, B, C, H, W)


def _mlp_map_forward(self: SpikingMLP, x: torch.Tensor) -> torch.Tensor:
    # Spikingformer CIFAR: LIF, Conv2d 1x1 on [T·B, C, H, W], BN2d, reshape; twice.
    T, B, _, H, W = x.shape
    for lif, pointwise in ((self.lif1, self.fc1), (self.lif2, self.fc2)):
        y = nn.Conv2d.forward(pointwise.proj, lif(x).flatten(0, 1))
        x = nn.BatchNorm2d.forward(pointwise.bn, y).reshape(T, B, -1, H, W)
    return x


@replaces(SpikformerStem)
class ReferenceSPSStem(SpikformerStem):
    """Spikformer CIFAR's SPS ending in ``[T, B, N, C]`` tokens."""

    forward = _sps_tokens_forward


@replaces(SpikingSelfAttention)
class ReferenceTokenSelfAttention(SpikingSelfAttention):
    """Spikformer CIFAR's attention on ``[T, B, N, C]`` tokens."""

    forward = _ssa_tokens_forward


@replaces(SpikingMLP)
class ReferenceTokenMLP(SpikingMLP):
    """Spikformer CIFAR's MLP on ``[T, B, N, C]`` tokens."""

    forward = _mlp_tokens_forward


@replaces(SpikingSelfAttention)
class ReferenceMapSelfAttention(SpikingSelfAttention):
    """Spikingformer CIFAR's attention, Conv1d-BN1d on ``[T·B, C, N]``."""

    forward = _ssa_map_forward


@replaces(SpikingMLP)
class ReferenceMapMLP(SpikingMLP):
    """Spikingformer CIFAR's MLP, Conv2d 1x1 on ``[T·B, C, H, W]``."""

    forward = _mlp_map_forward


@functools.cache
def reference_class(cls: type, tokens: bool = False) -> type:
    """``cls`` (a `SpikingClassifier`) with the references' ``repeat`` over T, and with
    ``tokens`` Spikformer CIFAR's token stream from stem to head; named ``Reference<cls>``."""
    methods = {"to_sequence": _repeat_sequence, "__module__": __name__}
    if tokens:
        methods["forward_seq"] = _tokens_forward_seq
    methods["__doc__"] = f"{cls.__name__} computing as the official code does (reference mode)."
    return replaces(cls)(type(f"Reference{cls.__name__}", (cls,), methods))


def install_reference_mode(model: nn.Module) -> bool:
    """Swap in the reference-layout classes on a model (see the module docstring).

    Args:
        model: Any module; a `SpikingClassifier` gets the references' ``repeat`` over T, and
            the modules of a ``SpikingTransformer`` of the CIFAR form their layouts.

    Returns:
        True if the model's transformer layout was replaced by the reference layout.

    Example:
        >>> from gradprobe.models import create_model
        >>> model = create_model("spikformer_2_384_cifar")
        >>> install_reference_mode(model), type(model).__name__
        (True, 'ReferenceSpikformer')
    """
    layout = isinstance(model, SpikingTransformer) and getattr(model, "form", None) == "cifar"
    tokens = layout and isinstance(model, Spikformer)
    if isinstance(model, SpikingClassifier):
        swap_class(model, reference_class(plain_class(type(model)), tokens))
    if not layout:
        return False
    if tokens:
        swap_class(model.stem, ReferenceSPSStem)
        mapping = {SpikingSelfAttention: ReferenceTokenSelfAttention, SpikingMLP: ReferenceTokenMLP}
    else:
        mapping = {SpikingSelfAttention: ReferenceMapSelfAttention, SpikingMLP: ReferenceMapMLP}
    swap_modules(model, mapping)
    return True
