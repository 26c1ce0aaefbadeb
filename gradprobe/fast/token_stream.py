"""The residual stream of a Spikformer held in token memory order, installed from outside.

A `gradprobe.models.layers.SpikingTransformer` keeps its residual stream as ``[T, B, C, H, W]``
maps in NCHW memory. Where every pointwise layer of its blocks is a token Linear (Spikformer
CIFAR), the CPU fast path holds the stream in token memory order instead (``[T, B, H, W, C]``,
channels last; the same values and shape), so that the token Linears of
`gradprobe.fast.layers.FastPointwiseBN` read it as ``[T·B, N, C]`` rows without a copy:

* `TokenStream` runs the blocks (the model's ``nn.Sequential``, swapped in place, so state-dict
  keys stay ``blocks.0....``) on the stem's output moved into token order, and hands the
  gradient of its output back in token order too (`_TokenOrderGrad`);
* `TokenStreamSelfAttention` merges the attention heads into token order, so that the output
  projection's token Linear reads them without a copy either.

`install_token_stream` swaps both in (`gradprobe.fast.swap`); `gradprobe.fast.configure` does so
in fast mode on CPU unless ``exact``, and `gradprobe.fast.swap.restore_modules` takes them out.
The forward's values are the NCHW stream's bit for bit (``tests/test_fast.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from gradprobe.fast.swap import plain_class, replaces, swap_class, swap_modules
from gradprobe.models.layers import PointwiseBN, SpikingSelfAttention, SpikingTransformer


def _token_order(x_seq: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, H, W]`` with token memory order (channels last): a copy unless it has it."""
    return x_seq.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


class _TokenOrderGrad(torch.autograd.Function):
    """Identity whose backward hands on the gradient in token memory order.

    At the end of a token stream the head's mean over tokens sends back a broadcast gradient.
    Without this, the residual stream's gradients would add that broadcast to token-ordered
    branch gradients in NCHW order, and every LIF on the stream would copy its gradient back to
    its own (token) order.
    """

    @staticmethod
    def forward(ctx, x_seq: torch.Tensor) -> torch.Tensor:
        return x_seq.view_as(x_seq)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _token_order(grad)


@replaces(nn.Sequential)
class TokenStream(nn.Sequential):
    """A transformer's blocks run on a residual stream in token memory order (same values)."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return _TokenOrderGrad.apply(super().forward(_token_order(x_seq)))


@replaces(SpikingSelfAttention)
class TokenStreamSelfAttention(SpikingSelfAttention):
    """`SpikingSelfAttention` whose merged heads keep token memory order (same values)."""

    def merge_heads(self, attn: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        T, B, C, H, W = shape
        return attn.transpose(2, 3).reshape(T, B, H, W, C).permute(0, 1, 4, 2, 3)


def install_token_stream(model: nn.Module) -> int:
    """Hold the residual stream of every `SpikingTransformer` in ``model`` whose blocks'
    pointwise layers are all token Linears in token memory order.

    Args:
        model: Any module; other modules are left alone.

    Returns:
        How many transformers now hold a token stream.

    Example:
        >>> from gradprobe.models import create_model
        >>> install_token_stream(create_model("spikformer_2_384_cifar"))
        1
    """
    count = 0
    for module in model.modules():
        if not isinstance(module, SpikingTransformer):
            continue
        blocks = module.blocks
        kinds = {m.kind for m in blocks.modules() if isinstance(m, PointwiseBN)}
        if kinds == {"linear"} and plain_class(type(blocks)) is nn.Sequential:
            swap_class(blocks, TokenStream)
            swap_modules(blocks, {SpikingSelfAttention: TokenStreamSelfAttention})
            count += 1
    return count
