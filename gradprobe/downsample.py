"""The four downsampling variants of the CML paper behind one registry.

A *downsampling site* is a ConvBN whose output ``x`` (the pre-spike map) reaches a spiking
neuron and a 2x spatial reduction (spec section 9). The variants differ only in where and how
the reduction happens; every variant has the same parameters with the same shapes:

================  =======================  ==========================================
registry name     paper name               order at the site
================  =======================  ==========================================
``lif_maxpool``   ConvBN-LIF-MaxPool       conv-BN → LIF → MaxPool (baseline), eq. (7)
``maxpool_lif``   ConvBN-MaxPool-LIF (CML) conv-BN → MaxPool → LIF, eq. (11)
``avgpool_lif``   ConvBN-AvgPool-LIF       conv-BN → AvgPool → LIF
``strided_conv``  ConvBN(stride=2)-LIF     conv(stride 2)-BN → LIF
================  =======================  ==========================================

All modules are multi-step: ``[T, B, C, H, W] → [T, B, C', H', W']``. Sub-module names are the
same in every variant (``conv``, ``bn``, ``pool``, ``lif``) so that state dicts line up and the
probe can find the pieces of a site by name. The paper names and their order live in
`gradprobe.labels`, which plots and reports read without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from spikingjelly.activation_based import layer
from torch import nn

from gradprobe.labels import add_label
from gradprobe.neuron import NeuronConfig, make_neuron
from gradprobe.registry import Registry

DOWNSAMPLES: Registry[Callable[..., DownsampleSite]] = Registry("downsampling variant")


@dataclass(frozen=True)
class PoolSpec:
    """Geometry of the 2x reduction; the default mirrors the references' MaxPool2d(3, 2, 1).

    Args:
        kernel_size: Pooling window side.
        stride: Pooling stride (also the stride of the ``strided_conv`` variant's conv).
        padding: Pooling padding.
        count_include_pad: For ``avgpool_lif`` only: whether padded zeros count in the mean.
            ``False`` (our default) keeps border windows unbiased; no reference code exists.
    """

    kernel_size: int = 3
    stride: int = 2
    padding: int = 1
    count_include_pad: bool = False

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.stride < 1 or self.padding < 0:
            raise ValueError(f"invalid pooling geometry {self}")
        if 2 * self.padding > self.kernel_size:
            raise ValueError(
                f"pooling padding {self.padding} exceeds half the kernel {self.kernel_size}"
            )


def check_sequence(x: torch.Tensor, where: str = "input") -> None:
    """Raise a clear error unless ``x`` is a 5-D multi-step image batch ``[T, B, C, H, W]``."""
    if x.dim() != 5:
        raise ValueError(
            f"{where} must be a multi-step image batch [T, B, C, H, W]; got shape {tuple(x.shape)}"
        )


class ConvBN(nn.Module):
    """Multi-step Conv2d (no bias, as in every reference stem) followed by BatchNorm2d."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = layer.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,
            step_mode="m",
        )
        self.bn = layer.BatchNorm2d(out_channels, step_mode="m")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_sequence(x_seq)
        return self.bn(self.conv(x_seq))


class ConvBNLIF(ConvBN):
    """The plain ConvBN-LIF unit for stages without downsampling.

    Example:
        >>> unit = ConvBNLIF(3, 16)
        >>> unit(torch.rand(4, 2, 3, 32, 32)).shape
        torch.Size([4, 2, 16, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        neuron: NeuronConfig | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self.lif = make_neuron(neuron)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.lif(super().forward(x_seq))


class DownsampleSite(ConvBN):
    """One downsampling site: conv-BN, then a spiking neuron and a 2x reduction in variant order.

    ``self.bn``'s output is the pre-spike map x the probe measures. ``self.pool`` is ``None``
    for ``strided_conv``. Build instances with `build_downsample`.
    """

    variant: str = ""
    #: The variant whose forward pass this one computes bit for bit (`forward_of`); ``None``:
    #: its own.
    forward_as: str | None = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        neuron: NeuronConfig | None = None,
        pool: PoolSpec | None = None,
    ) -> None:
        self.pool_spec = pool or PoolSpec()
        conv_stride = self.pool_spec.stride if self.variant == "strided_conv" else 1
        super().__init__(in_channels, out_channels, kernel_size, stride=conv_stride)
        self.pool = self._make_pool(self.pool_spec)
        self.lif = make_neuron(neuron)

    def _make_pool(self, spec: PoolSpec) -> nn.Module | None:
        return layer.MaxPool2d(spec.kernel_size, spec.stride, spec.padding, step_mode="m")

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"


@DOWNSAMPLES.register("lif_maxpool")
class LIFMaxPool(DownsampleSite):
    """ConvBN → LIF → MaxPool: the Spikformer/Spikingformer baseline.

    Max over binary spikes: PyTorch keeps the first maximum in window order, so backward routes
    each window's gradient to the first spiking position, eq. (7).
    """

    variant = "lif_maxpool"

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.pool(self.lif(super().forward(x_seq)))


@DOWNSAMPLES.register("maxpool_lif")
class MaxPoolLIF(DownsampleSite):
    """ConvBN → MaxPool → LIF (CML): the max is taken over real-valued x, eq. (11)."""

    variant = "maxpool_lif"

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.lif(self.pool(super().forward(x_seq)))


@DOWNSAMPLES.register("avgpool_lif")
class AvgPoolLIF(DownsampleSite):
    """ConvBN → AvgPool → LIF; window geometry mirrors the max-pool, gradient spread evenly."""

    variant = "avgpool_lif"

    def _make_pool(self, spec: PoolSpec) -> nn.Module:
        return layer.AvgPool2d(
            spec.kernel_size,
            spec.stride,
            spec.padding,
            count_include_pad=spec.count_include_pad,
            step_mode="m",
        )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.lif(self.pool(super().forward(x_seq)))


@DOWNSAMPLES.register("strided_conv")
class StridedConvLIF(DownsampleSite):
    """ConvBN(stride 2) → LIF: the conv producing x downsamples, no pool."""

    variant = "strided_conv"

    def _make_pool(self, spec: PoolSpec) -> None:
        return None

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.lif(super().forward(x_seq))


def build_downsample(
    name: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    neuron: NeuronConfig | None = None,
    pool: PoolSpec | None = None,
) -> DownsampleSite:
    """Build a downsampling site of the registered variant ``name``.

    Args:
        name: One of `list_downsamples()`.
        in_channels: Channels into the conv.
        out_channels: Channels of the pre-spike map x and of the output spikes.
        kernel_size: Conv kernel (padding keeps the size: ``kernel_size // 2``).
        neuron: Neuron settings for the site's LIF; reference defaults if ``None``.
        pool: Reduction geometry; ``PoolSpec()`` is MaxPool2d(3, 2, 1).

    Returns:
        A multi-step module ``[T, B, in_channels, H, W] → [T, B, out_channels, H/2, W/2]``.

    Example:
        >>> site = build_downsample("maxpool_lif", 16, 32)
        >>> site(torch.rand(4, 2, 16, 32, 32)).shape
        torch.Size([4, 2, 32, 16, 16])
    """
    return DOWNSAMPLES.get(name)(in_channels, out_channels, kernel_size, neuron=neuron, pool=pool)


def list_downsamples(pattern: str = "*") -> list[str]:
    """Registered variant names matching a shell-style pattern.

    Example:
        >>> list_downsamples("*_lif")
        ['avgpool_lif', 'maxpool_lif']
    """
    return DOWNSAMPLES.names(pattern)


def forward_of(name: str) -> str:
    """The variant whose forward pass ``name`` computes: ``name`` itself unless its builder
    declares ``forward_as`` (a variant that changes the backward only).

    Example:
        >>> forward_of("maxpool_lif")
        'maxpool_lif'
    """
    return getattr(DOWNSAMPLES.get(name), "forward_as", None) or name


def register_downsample(name: str, *, label: str | None = None) -> Callable:
    """Decorator registering a new variant: a `DownsampleSite` subclass or a factory with the
    signature of `build_downsample` minus ``name``.

    Args:
        name: Registry name; a duplicate raises ``ValueError``.
        label: Display label in figures and tables (`gradprobe.labels.variant_label`); the
            name itself if ``None``.

    Example:
        >>> @register_downsample("lif_maxpool_k2", label="ConvBN-LIF-MaxPool(2x2)")
        ... def lif_maxpool_k2(in_channels, out_channels, kernel_size=3, *, neuron=None,
        ...                    pool=None):
        ...     return build_downsample("lif_maxpool", in_channels, out_channels, kernel_size,
        ...                             neuron=neuron, pool=PoolSpec(2, 2, 0))
    """
    register = DOWNSAMPLES.register(name)

    def wrap(builder: Callable) -> Callable:
        builder = register(builder)  # a duplicate name raises before any label is recorded
        if label is not None:
            add_label(name, label)
        return builder

    return wrap


# The variants beyond the paper's four register themselves (one module each).
import gradprobe.variants  # noqa: E402, F401
