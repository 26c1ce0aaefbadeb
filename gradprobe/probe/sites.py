"""Site discovery: which modules of a model form a downsampling site.

Our `gradprobe.downsample.DownsampleSite` modules are found by type. Foreign models (e.g.
spikingjelly's Spikformer) are matched by pattern over their leaf modules in registration
order: a ``BatchNorm2d`` followed by a max/avg pool and a spiking neuron, in either order.
Registration order is not dataflow, so a BN, a neuron and a pool of sibling blocks can line up
by accident; `gradprobe.probe.Probe` checks each foreign site's dataflow on its first measured
call and drops the ones that fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradprobe.downsample import DownsampleSite
from gradprobe.neuron import is_spiking_neuron

POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_TRANSPARENT = (nn.Identity, nn.Dropout, nn.Dropout2d)


@dataclass(frozen=True)
class Site:
    """The modules of one downsampling site.

    Attributes:
        name: Qualified name of the module holding the site.
        bn: Module whose output is the pre-spike map x.
        neuron: The spiking neuron x reaches.
        pool: The 2x pooling module, ``None`` for strided convs.
        variant: Registry name for our own sites; ``None`` for foreign ones, whose label is
            read from the order their hooks fire in (e.g. ``"maxpool_lif"``).
    """

    name: str
    bn: nn.Module
    neuron: nn.Module
    pool: nn.Module | None
    variant: str | None = None


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    # Neurons and our sites are units: their children (surrogates, conv/bn/pool) are not leaves.
    out = []
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if (
            is_spiking_neuron(child)
            or isinstance(child, DownsampleSite)
            or not any(child.children())
        ):
            out.append((full, child))
        else:
            out += _leaves(child, full)
    return out


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


def _scan(leaves: list[tuple[str, nn.Module]], require_pool: bool) -> list[Site]:
    """Sites matching BN → {pool, neuron} in either order (or BN → neuron if pool optional)."""
    found = []
    significant = [(n, m) for n, m in leaves if not isinstance(m, _TRANSPARENT)]
    for i, (bn_name, bn) in enumerate(significant):
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        nxt = significant[i + 1 : i + 3]
        kinds = [
            ("pool" if isinstance(m, POOLS) else "neuron" if is_spiking_neuron(m) else "")
            for _, m in nxt
        ]
        if kinds[:2] in (["pool", "neuron"], ["neuron", "pool"]):
            pool = next(m for _, m in nxt if isinstance(m, POOLS))
            neuron = next(m for _, m in nxt if is_spiking_neuron(m))
            name = _common_prefix([bn_name] + [n for n, _ in nxt]) or bn_name
            found.append(Site(name, bn, neuron, pool))
        elif not require_pool and kinds[:1] == ["neuron"]:
            name = _common_prefix([bn_name, nxt[0][0]]) or bn_name
            found.append(Site(name, bn, nxt[0][1], None))
    return found


def _own_site(name: str, module: DownsampleSite) -> Site:
    return Site(name, module.bn, module.lif, module.pool, module.variant)


def find_sites(model: nn.Module, names: list[str] | None = None) -> list[Site]:
    """Find the downsampling sites of ``model``.

    Our `DownsampleSite` modules are found by type. Foreign models are matched by pattern: a
    ``BatchNorm2d`` followed (in module registration order, e.g. inside spikingjelly's
    ``SeqToANNContainer``) by a max/avg pool and a spiking neuron, in either order. The order
    can pair modules that do not feed each other; a `Probe` checks the dataflow of foreign
    sites on their first call and drops those that fail. With
    ``names``, each named module is one site: ours if it is a `DownsampleSite`, otherwise the
    first BN → {pool, neuron} (or BN → neuron, a site without window) inside it.

    Args:
        model: Any module.
        names: Qualified module names to use instead of automatic discovery.

    Returns:
        Sites in module order.

    Raises:
        ValueError: A name that does not exist or holds no site.

    Example:
        >>> from gradprobe.downsample import build_downsample
        >>> [s.name for s in find_sites(nn.Sequential(build_downsample("lif_maxpool", 3, 8)))]
        ['0']
    """
    if names is None:
        if isinstance(model, DownsampleSite):
            return [_own_site("", model)]
        leaves = _leaves(model)
        own = [_own_site(n, m) for n, m in leaves if isinstance(m, DownsampleSite)]
        return own + _scan(leaves, require_pool=True)
    sites = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"model has no module {name!r}") from None
        if isinstance(module, DownsampleSite):
            sites.append(_own_site(name, module))
            continue
        found = _scan(_leaves(module, name), require_pool=False)
        if not found:
            raise ValueError(
                f"module {name!r} holds no downsampling site (a BatchNorm2d whose output "
                "reaches a spiking neuron, with or without a pool)"
            )
        sites.append(Site(name, found[0].bn, found[0].neuron, found[0].pool))
    return sites


def foreign_label(site: Site, order: str | None) -> str:
    """The variant label of a foreign site, from the order its hooks fired in.

    Args:
        site: A site without registry name.
        order: ``"neuron_first"`` or ``"pool_first"``, as seen on its calls.

    Returns:
        ``lif_maxpool``, ``maxpool_lif``, ``lif_avgpool``, ``avgpool_lif``, or ``no_pool``.
    """
    if site.pool is None:
        return "no_pool"
    pool = "maxpool" if isinstance(site.pool, nn.MaxPool2d) else "avgpool"
    return f"lif_{pool}" if order == "neuron_first" else f"{pool}_lif"


def _reads(t: Any, source: torch.Tensor | None) -> bool:
    """Whether ``t`` is ``source`` itself or a view of all of it (same storage, same size)."""
    return (
        isinstance(t, torch.Tensor)
        and source is not None
        and t.numel() == source.numel()
        and t.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()
    )


def misread(site: Site, part: str, inp: Any, source: torch.Tensor | None, after_x: bool) -> str:
    """Why ``part`` of a foreign site does not read what its match says it reads; ``""`` if it does.

    Args:
        site: A site matched by module order.
        part: ``"neuron"`` or ``"pool"``.
        inp: The input the part was called with.
        source: What it must read: x when the other part has not run yet (``after_x``),
            else the other part's output.
        after_x: The part runs first after the BN.

    Returns:
        The reason to drop the site, or ``""``.
    """
    if _reads(inp, source):
        return ""
    what = (
        "x (its BN's output)"
        if after_x
        else "its pool's output"
        if part == "neuron"
        else "its neuron's output"
    )
    kind = type(getattr(site, part)).__name__
    return f"the input of its {part} ({kind}) is not {what} nor a view of it"
