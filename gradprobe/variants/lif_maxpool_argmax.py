"""``lif_maxpool_argmax``: spikes pooled (the baseline's forward), gradient to the argmax of x.

One cell of the causal 2 × 2 (forward pools {spikes, x} × backward routes to {first spike,
argmax of x}): the forward is ``lif_maxpool``'s bit for bit (LIF at full resolution, max-pool
over its spikes); in backward each window's gradient goes to the window's argmax of x at that
timestep (first index on exact ties), eq. (11)'s position, and from there through that
position's surrogate, instead of to the pool's first spike, eq. (7). With ``maxpool_lif`` it
isolates the backward: same routing, other forward.
"""

from __future__ import annotations

import torch

from gradprobe.downsample import ConvBN, DownsampleSite, PoolSpec, register_downsample
from gradprobe.pooling import RoutedMaxPool2d


@register_downsample("lif_maxpool_argmax", label="ConvBN-LIF-MaxPool, grad to argmax x")
class LIFMaxPoolArgmax(DownsampleSite):
    """ConvBN → LIF → MaxPool whose backward lands each window on its argmax of x.

    Example:
        >>> site = LIFMaxPoolArgmax(3, 8)
        >>> site(torch.rand(2, 1, 3, 8, 8)).shape
        torch.Size([2, 1, 8, 4, 4])
    """

    variant = "lif_maxpool_argmax"
    forward_as = "lif_maxpool"

    def _make_pool(self, spec: PoolSpec) -> RoutedMaxPool2d:
        return RoutedMaxPool2d(spec.kernel_size, spec.stride, spec.padding, rule="guide")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        x = ConvBN.forward(self, x_seq)
        return self.pool(self.lif(x), x)
