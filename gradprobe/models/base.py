"""The interface every backbone implements."""

from __future__ import annotations

import torch
from torch import nn

from gradprobe.downsample import DownsampleSite


def check_sizes(owner: str, *, at_least: int = 1, **sizes: object) -> None:
    """Raise ``ValueError`` naming the first of ``sizes`` that is not an integer >= ``at_least``
    (a zero or negative width would only fail later, inside a layer, without its name).

    Example:
        >>> check_sizes("Spikformer", embed_dim=0)
        Traceback (most recent call last):
        ...
        ValueError: Spikformer: embed_dim must be an integer >= 1, got 0
    """
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
            raise ValueError(f"{owner}: {name} must be an integer >= {at_least}, got {value!r}")


class SpikingClassifier(nn.Module):
    """Base class of the backbones: input handling over T and the per-timestep output.

    Subclasses implement `forward_seq` on a ``[T, B, C, H, W]`` sequence and return per-timestep
    logits ``[T, B, K]``. `forward` accepts a static image batch ``[B, C, H, W]`` (repeated T
    times, as the references do) or an event-frame batch ``[B, T, C, H, W]`` (as spikingjelly's
    DVS datasets give it) and returns the mean over T, ``[B, K]``.

    Attributes:
        T: Number of time steps for static input.
        downsample: The variant used at every downsampling site.
        in_channels: Expected input channels.
        img_size: Expected input side (``None`` if any size works).
    """

    T: int
    downsample: str
    in_channels: int
    img_size: int | None = None

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.unsqueeze(0).expand(self.T, *x.shape)
        if x.dim() == 5:
            return x.transpose(0, 1)
        raise ValueError(
            f"model input must be images [B, C, H, W] or event frames [B, T, C, H, W]; "
            f"got shape {tuple(x.shape)}"
        )

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_timesteps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-timestep logits ``[T, B, K]`` (what the TET loss needs)."""
        return self.forward_seq(self.to_sequence(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_timesteps(x).mean(0)

    def downsample_sites(self) -> dict[str, DownsampleSite]:
        """The model's downsampling sites by qualified module name, in forward order."""
        return {n: m for n, m in self.named_modules() if isinstance(m, DownsampleSite)}
