"""Independent checks of a variant's routing: brute-force windows, compared with autograd.

Used by the tests of each causal variant (``tests/test_variant_*.py``): nothing here calls
`gradprobe.pooling` or the probe's window analysis.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from gradprobe.downsample import PoolSpec, build_downsample
from gradprobe.probe import attach_probe

GEOMETRIES = [PoolSpec(2, 2, 0), PoolSpec(3, 2, 1)]  # non-overlapping, and the references'


def windows(m: torch.Tensor, spec: PoolSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, C, H, W]`` as its windows' values ``[N, C, Ho, Wo, k*k]`` (padding is -inf) and
    each tap's flat index in the map (-1 for padding) ``[Ho, Wo, k*k]``."""
    k, s, p = spec.kernel_size, spec.stride, spec.padding
    h, w = m.shape[-2:]
    padded = F.pad(m, (p, p, p, p), value=float("-inf"))
    values = padded.unfold(2, k, s).unfold(3, k, s).flatten(-2)
    place = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
    place = F.pad(place, (p, p, p, p), value=-1.0).unfold(2, k, s).unfold(3, k, s).flatten(-2)
    return values, place[0, 0].long()


def first_max(m: torch.Tensor, spec: PoolSpec) -> torch.Tensor:
    """Per window, the flat index of its first maximum in window order (``torch.argmax`` keeps
    the first of equal values)."""
    values, place = windows(m, spec)
    tap = values.argmax(-1)
    return place.expand(*tap.shape, place.shape[-1]).gather(-1, tap[..., None])[..., 0]


def routed(grad_y: torch.Tensor, m: torch.Tensor, spec: PoolSpec, rule: str) -> torch.Tensor:
    """The gradient a pool input receives when every window sends its ``grad_y`` to the first
    maximum of ``m`` (``rule="first_max"``) or splits it equally over ``m``'s maxima
    (``"split"``); float64, summed over overlapping windows."""
    grad = torch.zeros(m.numel() // m.shape[-1] // m.shape[-2], m.shape[-2] * m.shape[-1])
    grad = grad.double().view(*m.shape[:2], -1)
    g = grad_y.double()
    if rule == "first_max":
        return grad.scatter_add_(2, first_max(m, spec).flatten(2), g.flatten(2)).view(m.shape)
    values, place = windows(m, spec)
    at_max = values == values.max(-1, keepdim=True).values
    share = g[..., None] * at_max / at_max.sum(-1, keepdim=True)
    index = place.expand_as(share).clamp(min=0)
    grad.scatter_add_(2, index.flatten(2), (share * (place >= 0)).flatten(2))
    return grad.view(m.shape)


def site_pass(variant: str, spec: PoolSpec, seed: int = 0, T: int = 3):
    """One forward/backward of a fresh site (weights from ``seed``) on a random batch: x (BN
    output), spikes, the pool's input and its gradient, the output gradient, the output."""
    torch.manual_seed(seed)
    site = build_downsample(variant, 2, 4, pool=spec)
    got = {}

    def keep(name):
        def hook(module, args, out):
            got[name] = out
            out.retain_grad()

        return hook

    site.bn.register_forward_hook(keep("x"))
    site.lif.register_forward_hook(keep("spikes"))
    site.pool.register_forward_pre_hook(lambda m, args: got.update(pool_in=args[0]))
    site.pool.register_forward_hook(keep("y"))
    images = torch.randn(T, 2, 2, 9, 9, generator=torch.Generator().manual_seed(seed + 1))
    out = site(images * 2)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 2))
    out.backward(grad_out)
    functional.reset_net(site)
    return site, got, out.detach()


def pool_input_grad(got: dict) -> torch.Tensor:
    """The gradient autograd delivered to the pool's input, float64 ``[T*B, C, H, W]``."""
    return got["pool_in"].grad.double().flatten(0, 1)


def same_initial_weights(a: str, b: str, seed: int = 0) -> bool:
    states = []
    for variant in (a, b):
        torch.manual_seed(seed)
        states.append(build_downsample(variant, 2, 4).state_dict())
    return states[0].keys() == states[1].keys() and all(
        torch.equal(states[0][k], states[1][k]) for k in states[0]
    )


def precision(variant: str, spec: PoolSpec, images: torch.Tensor, seed: int = 0):
    """The probe's precision per timestep of one training pass of a fresh site."""
    torch.manual_seed(seed)
    site = build_downsample(variant, 2, 4, pool=spec)
    with attach_probe(nn.Sequential(site)) as probe:
        site(images).sum().backward()
    functional.reset_net(site)
    return probe.to_frame()["precision"].tolist()


def forward_is_twins(variant: str, twin: str, spec: PoolSpec) -> bool:
    """Same initial weights, and bit for bit the same spikes and output as ``twin``."""
    _, mine, out = site_pass(variant, spec)
    _, theirs, reference = site_pass(twin, spec)
    return (
        same_initial_weights(variant, twin)
        and torch.equal(out, reference)
        and torch.equal(mine["spikes"], theirs["spikes"])
    )
