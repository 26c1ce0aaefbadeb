"""``maxpool_lif_firstspike``: x pooled (CML's forward), gradient to where the baseline lands.

One cell of the causal 2 × 2 (forward pools {spikes, x} × backward routes to {first spike,
argmax of x}): the forward is ``maxpool_lif``'s bit for bit (max-pool over x, LIF on the pooled
map); in backward each window's gradient goes to the position ``lif_maxpool`` would have chosen
on the same x: the first position of the window, in window order, whose full-resolution LIF
spikes at that timestep, or the window's first position when none spikes (PyTorch's rule on an
all-zero window). That LIF is a *shadow*: the site's own neuron, copied without parameters or
hooks, run on x in the forward without gradient and reset around every call. It is not a
submodule, so state dicts, neuron counts and the probe see the site exactly as ``maxpool_lif``'s.
With ``lif_maxpool`` it isolates the forward: same routing, other forward.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gradprobe.downsample import ConvBN, DownsampleSite, PoolSpec, register_downsample
from gradprobe.pooling import RoutedMaxPool2d


@register_downsample("maxpool_lif_firstspike", label="ConvBN-MaxPool-LIF, grad to first spike")
class MaxPoolLIFFirstSpike(DownsampleSite):
    """ConvBN → MaxPool → LIF whose backward lands each window on the baseline's first spike.

    Example:
        >>> site = MaxPoolLIFFirstSpike(3, 8)
        >>> site(torch.rand(2, 1, 3, 8, 8)).shape
        torch.Size([2, 1, 8, 4, 4])
    """

    variant = "maxpool_lif_firstspike"
    forward_as = "maxpool_lif"

    def _make_pool(self, spec: PoolSpec) -> RoutedMaxPool2d:
        return RoutedMaxPool2d(spec.kernel_size, spec.stride, spec.padding, rule="guide")

    def shadow(self) -> nn.Module:
        """The full-resolution LIF that decides the routing: a copy of the site's neuron (its
        class too, so the fast path's fused kernel decides as the baseline's would)."""
        shadow = self.__dict__.get("_shadow")
        if type(shadow) is not type(self.lif):
            shadow = copy.deepcopy(self.lif)
            for hooks in (shadow._forward_hooks, shadow._forward_pre_hooks):
                hooks.clear()
            object.__setattr__(self, "_shadow", shadow)  # not a submodule
        return shadow

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        x = ConvBN.forward(self, x_seq)
        shadow = self.shadow()
        with torch.no_grad():
            shadow.reset()
            first_spikes = shadow(x.detach())
            shadow.reset()
        return self.lif(self.pool(x, first_spikes))
