"""captum attributions at a downsampling site's pre-spike map x, beside the probe.

captum treats a model as a stateless function of its inputs. A spiking model is not: its
neurons keep membrane state between calls. `SpikingForward` makes it one, by resetting every
neuron (``functional.reset_net``) before each forward and averaging per-timestep logits
``[T, B, K]`` over T. `site_attribution` then runs captum's ``LayerGradientXActivation`` on the
module whose output is x (the site's BN): with ``multiply_by_activation=False`` it returns the
raw layer gradient dL/dx, which must equal what the probe records (tested), and with ``True``
the gradient x activation attribution.

captum keeps the last call of a layer used several times per forward, so the layer must run
once per forward: multi-step modules (``[T, B, ...]`` in one call) and spikingjelly's
``SeqToANNContainer`` layers (``[T*B, ...]``, reshaped here to ``[T, B, ...]``) both do.
"""

from __future__ import annotations

import torch
from captum.attr import LayerGradientXActivation
from spikingjelly.activation_based import functional
from torch import nn

from gradprobe.downsample import DownsampleSite
from gradprobe.probe import Site, find_sites


class SpikingForward(nn.Module):
    """A stateless view of a spiking classifier, the function captum attributes.

    Args:
        model: Returns logits ``[B, K]`` (e.g. our backbones) or ``[T, B, K]`` (e.g.
            spikingjelly's Spikformer); the latter are averaged over T.

    Example:
        >>> from gradprobe.models import create_model
        >>> f = SpikingForward(create_model("sps_tokenizer_cifar", embed_dim=16, T=2))
        >>> f(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self.model)
        out = self.model(x)
        return out.mean(0) if out.dim() == 3 else out


def _site_layer(model: nn.Module, site: Site | nn.Module | str) -> nn.Module:
    if isinstance(site, Site):
        return site.bn
    if isinstance(site, DownsampleSite):
        return site.bn
    if isinstance(site, str):
        return find_sites(model, [site])[0].bn
    return site


def site_attribution(
    model: nn.Module,
    site: Site | nn.Module | str,
    inputs: torch.Tensor,
    target: int | torch.Tensor,
    *,
    multiply_by_activation: bool = False,
    average_over_time: bool = True,
) -> torch.Tensor:
    """captum attribution at a site's pre-spike map x for class ``target``.

    Args:
        model: The classifier (neuron state is reset before the forward).
        site: A `Site`, a `DownsampleSite`, a module name (resolved by `find_sites`) or the
            layer whose output is x itself.
        inputs: Model input ``[B, ...]``; dimension 0 must be the batch (captum's rule).
        target: Class index, or one per sample ``[B]``: the objective is the sum over the
            batch of the T-averaged target logits.
        multiply_by_activation: ``False``: the raw gradient dL/dx; ``True``: dL/dx * x.
        average_over_time: Average the ``[T, B, C, H, W]`` attribution over T.

    Returns:
        ``[B, C, H, W]`` if ``average_over_time`` else ``[T, B, C, H, W]``.

    Example:
        >>> from gradprobe.models import create_model
        >>> model = create_model("sps_tokenizer_cifar", embed_dim=16, T=2)
        >>> x = torch.rand(2, 3, 32, 32)
        >>> site_attribution(model, "stem.stages.stage3", x, target=0).shape
        torch.Size([2, 8, 32, 32])
    """
    layer = _site_layer(model, site)
    method = LayerGradientXActivation(
        SpikingForward(model), layer, multiply_by_inputs=multiply_by_activation
    )
    attr = method.attribute(inputs, target=target)
    batch = inputs.shape[0]
    if attr.dim() == 4:  # SeqToANNContainer layers see [T*B, C, H, W]
        attr = attr.reshape(attr.shape[0] // batch, batch, *attr.shape[1:])
    return attr.mean(0) if average_over_time else attr
