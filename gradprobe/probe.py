"""Gradient-landing probes: where does each pooling window route its gradient in x?

The paper's claim (sections 3.1-3.2) is about one thing: for every downsampling site, timestep
and pooling window, which element of the pre-spike map x (the BN output that feeds the neuron)
receives the window's gradient. ConvBN-LIF-MaxPool routes it to the first spiking position of
the window, eq. (7); ConvBN-MaxPool-LIF (CML) routes it to the argmax of x, eq. (11). A `Probe`
measures this during ordinary forward/backward passes of any ``nn.Module``.

Metrics, per site x timestep, over the pooling windows that routed a non-zero gradient (the
gradient arriving at the pool's output, ``dL/dy``, is non-zero; a window that routes nothing
cannot route it imprecisely, and counting it would dilute the measure with windows that do not
train anything):

``precision``
    Fraction of those windows whose *landing* (the position the pool's backward sends the
    window's gradient to: max-pool indices over the map the pool sees, with PyTorch's
    first-index tie rule) equals the window's argmax of x (first index on exact ties).
    ``lif_maxpool`` pools spikes, so its landing is eq. (7)'s; ``maxpool_lif`` pools x, so its
    precision is 1 by eq. (11). ``avgpool_lif`` has no single landing (the window's gradient is
    spread over every position), so precision is NaN; read ``mass_at_argmax`` instead.
``mass_at_argmax``
    Mean over those windows of the share of the window's routed |gradient| that lands on the
    argmax of x: 1 or 0 per window for max-pools (so it equals precision), and for average
    pools ``1 / n`` with ``n`` the window's real (non-padding) positions: 1/9 for interior
    3x3 windows, whatever ``count_include_pad`` says, because every real position gets the
    same ``dL/dy / divisor``.
``tie_rate``
    Fraction of those windows whose maximum, in the map the pool sees, is attained at more
    than one position: for max over binary spikes that is "several spikes or none", the case
    where eq. (7)'s first-index rule decides; for pools over x it counts exact ties of x,
    where eq. (11)'s argmax is itself decided by the first-index rule. Such ties are common
    at sites fed by spikes: every silent receptive field gives the same x.
``spike_rate``
    Mean output of the site's neuron at that timestep (all neurons, all samples).
``windows`` / ``windows_total``
    Windows that routed a non-zero gradient (the denominator above) / all windows.
``grad_abs_mean``
    Mean |dL/dx| over the map, the real gradient autograd delivers to x.

``strided_conv`` (and any site without a pool) has no window: the conv producing x already
downsamples and every position of x routes only its own gradient, so there is no choice of
position to measure. Precision, mass and tie rate are NaN, ``windows`` is 0; spike rate and
``grad_abs_mean`` are reported.

Hooks follow captum's pattern: a forward hook on the BN (and on the pool) keeps the module's
output, registers ``Tensor.register_hook`` on it and hands a clone downstream, so in-place ops
after the site cannot change what was kept or break the hook (``register_full_backward_hook``
does break). Outputs and gradients are unchanged, since a clone is the identity in value and in
backward. A pool output that does not require grad (a part run under ``torch.no_grad``) routes
nothing, and that call of the site leaves no record. The window analysis runs in the forward
hooks on PyTorch's max-pool kernels (channels-last on CPU): the first maximum of each window is
the pool's index, the last is the first of the map flipped in H and W, and an exact tie is a
window where the two differ. Only per-window booleans are kept until backward; no value leaves
the device before `to_frame`.

Foreign sites are matched by module registration order, which is not dataflow: a BN, a neuron
and a pool of a sibling block can line up by accident. So on its first measured call each
foreign site checks that its neuron and pool read x (or each other's output) themselves or a
view of it; a site that fails is dropped with a warning.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradprobe.downsample import DownsampleSite
from gradprobe.neuron import is_spiking_neuron

FRAME_COLUMNS = [
    "step",
    "site",
    "variant",
    "t",
    "precision",
    "mass_at_argmax",
    "tie_rate",
    "spike_rate",
    "windows",
    "windows_total",
    "grad_abs_mean",
]
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


@dataclass
class SiteRecord:
    """What one call of one site recorded on one backward pass (tensors of length T).

    Attributes:
        step: Probe step counter (see `Probe`).
        site: Site name.
        variant: Variant label.
        t0: Timestep of the first entry (non-zero when a site is called several times per
            step, e.g. single-step neurons).
        precision, mass_at_argmax, tie_rate, spike_rate, windows, grad_abs_mean: Per timestep,
            as defined in the module docstring.
        windows_total: Windows per timestep.
        maps: With ``keep_maps``: ``x``, ``grad_x`` ``[T, B, C, H, W]``; ``pooled`` (what the
            pool saw), ``spikes`` (neuron output); per window ``[T, B, C, Ho, Wo]``: ``landing``
            and ``argmax`` (flat indices into H*W, as ``max_pool2d`` returns them; ``landing``
            is -1 for average pools, which have no single landing), ``routed``,
            ``tie`` (bool), ``mass`` (share of the window's gradient at the argmax of x,
            float64), ``grad_y`` (dL/dy at the pool output).
    """

    step: int
    site: str
    variant: str
    t0: int
    precision: torch.Tensor
    mass_at_argmax: torch.Tensor
    tie_rate: torch.Tensor
    spike_rate: torch.Tensor
    windows: torch.Tensor
    windows_total: int
    grad_abs_mean: torch.Tensor
    maps: dict[str, torch.Tensor] | None = None


@dataclass
class _Call:
    """State of one forward call of a site, filled by the forward hooks, closed in backward."""

    site: Site
    step: int
    index: int
    x: torch.Tensor | None  # the saved pre-spike map, dropped once measured (unless kept)
    x_shape: torch.Size
    # Aliases of the module outputs, held until the pool has run so that their memory cannot
    # be reused meanwhile: the pool's (and, for foreign sites, the neuron's) input is identified
    # by sharing their storage.
    x_alias: torch.Tensor | None = None
    spikes_alias: torch.Tensor | None = None
    y_alias: torch.Tensor | None = None  # pool output, while a foreign site is unchecked
    binary: bool = False  # the neuron emits exactly 0 or 1 (Heaviside forward)
    checked: set[str] = field(default_factory=set)  # "neuron", "pool": dataflow seen right
    skip: bool = False  # nothing to record (dropped site, or the pool output has no grad)
    T: int | None = None
    order: str | None = None  # "pool_first" | "neuron_first"
    spike_rate: torch.Tensor | None = None
    hit: torch.Tensor | None = None  # [N, C, Ho, Wo] landing == argmax (max pools)
    share: torch.Tensor | None = None  # [Ho, Wo] routed share at argmax (avg pools)
    tie: torch.Tensor | None = None
    routed: torch.Tensor | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)


def _pool_args(pool: nn.Module) -> tuple[Any, Any, Any, Any, bool]:
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return pool.kernel_size, stride, pool.padding, getattr(pool, "dilation", 1), pool.ceil_mode


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _tap_ranges(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> list[tuple[slice, slice]]:
    """Per kernel tap along one axis: (output windows whose tap is inside the map, input slice)."""
    ranges = []
    for a in range(k):
        offset = a * d - p  # input index of the tap in window i is i * s + offset
        first = max(0, (s - 1 - offset) // s)
        last = min(n_out, (n_in - 1 - offset) // s + 1)
        if last <= first:
            ranges.append((slice(0, 0), slice(0, 0)))
            continue
        start = first * s + offset
        ranges.append((slice(first, last), slice(start, start + (last - first - 1) * s + 1, s)))
    return ranges


@functools.lru_cache(maxsize=64)
def _taps(
    geometry: tuple, in_hw: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[list, torch.Tensor]:
    """Every window tap as (output rows, output cols, input rows, input cols) slices, and the
    number of real (non-padding) positions per window ``[Ho, Wo]``. Padding is never built."""
    k, s, p, d = (_pair(a) for a in geometry[:4])
    rows = _tap_ranges(in_hw[0], out_hw[0], k[0], s[0], p[0], d[0])
    cols = _tap_ranges(in_hw[1], out_hw[1], k[1], s[1], p[1], d[1])
    taps = [(ro, co, ri, ci) for ro, ri in rows for co, ci in cols]
    real_rows = torch.zeros(out_hw[0], dtype=torch.float64)
    real_cols = torch.zeros(out_hw[1], dtype=torch.float64)
    for ro, _ in rows:
        real_rows[ro] += 1
    for co, _ in cols:
        real_cols[co] += 1
    return taps, real_rows[:, None] * real_cols[None, :]


def _pool_out(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    # PyTorch's pooling_output_shape
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    return out - 1 if ceil and (out - 1) * s >= n + p else out


@functools.lru_cache(maxsize=64)
def _mirrored(
    geometry: tuple, in_hw: tuple[int, int], out_hw: tuple[int, int]
) -> tuple[tuple[int, int], bool] | None:
    """Padding and ceil mode under which max-pooling the map flipped in H and W visits the
    windows of ``geometry`` mirrored: the same real positions, in reverse order. ``None`` where
    no symmetric padding gives them."""
    k, s, p, d = (_pair(a) for a in geometry[:4])
    # window i starts at i*s - p; mirrored, window (n_out - 1 - i) must start at the same place
    pad = tuple(
        (o - 1) * s[a] - (n - 1) - p[a] + (k[a] - 1) * d[a]
        for a, (n, o) in enumerate(zip(in_hw, out_hw, strict=True))
    )
    if not all(0 <= pad[a] <= k[a] // 2 for a in range(2)):
        return None
    for ceil in (False, True):
        if all(_pool_out(in_hw[a], k[a], s[a], pad[a], d[a], ceil) == out_hw[a] for a in range(2)):
            return pad, ceil
    return None


def _ties(m: torch.Tensor, first: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Windows whose maximum is attained at more than one position of ``m``.

    ``first`` holds max-pool indices over ``m``: each window's first maximum in window order.
    The last maximum is the first one over ``m`` flipped in H and W, so a tie is a window whose
    first and last maxima differ: two max-pool passes, exact, no per-tap temporaries.
    """
    k, s, _, d, _ = geometry = _pool_args(pool)
    h, w = m.shape[-2:]
    mirrored = _mirrored(geometry, (h, w), tuple(first.shape[-2:]))
    if mirrored is None:
        return _tap_ties(m, first, pool)
    pad, ceil = mirrored
    _, last = F.max_pool2d(m.flip(-2, -1), k, s, pad, d, ceil_mode=ceil, return_indices=True)
    # index i of the flipped map is h*w - 1 - i in m
    return last.flip(-2, -1).add_(first) != h * w - 1


def _tap_ties(m: torch.Tensor, first: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """`_ties` for geometries `_mirrored` cannot express: count equal taps, slice by slice."""
    values = m.flatten(-2).gather(-1, first.flatten(-2)).view(first.shape)
    taps, _ = _taps(_pool_args(pool), tuple(m.shape[-2:]), tuple(first.shape[-2:]))
    count = torch.zeros(first.shape, dtype=torch.int16, device=first.device)
    equal = torch.empty(first.shape, dtype=torch.bool, device=first.device)
    for ro, co, ri, ci in taps:
        torch.eq(m[..., ri, ci], values[..., ro, co], out=equal[..., ro, co])
        count[..., ro, co] += equal[..., ro, co]
    return count > 1


def _fast_layout(t: torch.Tensor) -> torch.Tensor:
    # PyTorch's CPU pooling kernels are several times faster on channels-last maps.
    return t.contiguous(memory_format=torch.channels_last) if t.device.type == "cpu" else t


def _same_memory(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    return b is not None and a.data_ptr() == b.data_ptr() and a.numel() == b.numel()


def _reads(t: Any, source: torch.Tensor | None) -> bool:
    """Whether ``t`` is ``source`` itself or a view of all of it (same storage, same size)."""
    return (
        isinstance(t, torch.Tensor)
        and source is not None
        and t.numel() == source.numel()
        and t.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()
    )


def _spike_count(spikes: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Spikes per window (a sum pool; padding adds nothing)."""
    k, s, p, _, ceil = _pool_args(pool)
    return F.avg_pool2d(spikes, k, s, p, ceil_mode=ceil, count_include_pad=True, divisor_override=1)


def _max_indices(m: torch.Tensor, pool: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    k, s, p, d, ceil = _pool_args(pool)
    return F.max_pool2d(m, k, s, p, d, ceil_mode=ceil, return_indices=True)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *t.shape[-3:])


def _per_t(t: torch.Tensor, T: int) -> torch.Tensor:
    return t.reshape(T, -1)


class Probe:
    """Records gradient landing at downsampling sites; see the module docstring for metrics.

    Hooks exist only while the probe is enabled: `disable` removes them (zero overhead),
    `enable` puts them back, `remove` detaches the probe for good. As a context manager it
    removes its hooks on exit, also when the body raises.

    A *step* is one forward pass with gradients enabled: it starts at a call of the model
    (a forward pre-hook on it) or, if the model is driven through another method (e.g.
    ``forward_timesteps``), at the first site forward after a backward reached the sites.
    With ``every=N`` only steps 0, N, 2N, ... are measured; the others pay a Python call per
    hooked module and nothing else.

    Foreign sites (``variant`` ``None``) are checked on their first measured call: the neuron
    and the pool must read x, or each other's output, themselves or as a view. A site that
    fails is dropped from `sites`, its hooks removed, with one warning naming it.

    Args:
        model: Module the sites belong to.
        sites: Sites from `find_sites`.
        every: Measure every ``every``-th step.
        keep_maps: Keep per-window maps and x / dL/dx in each record (memory heavy).
    """

    def __init__(
        self, model: nn.Module, sites: list[Site], every: int = 1, keep_maps: bool = False
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.model: nn.Module | None = model
        self.sites = list(sites)
        self.every = every
        self.keep_maps = keep_maps
        self.records: list[SiteRecord] = []
        self.step = -1
        self._handles: list[RemovableHandle] = []
        self._site_handles: dict[Site, list[RemovableHandle]] = {}
        self._unchecked = {site for site in self.sites if site.variant is None}
        self._sampled = False
        self._open = False
        self._calls: dict[Site, list[_Call]] = {}
        self._current: dict[Site, _Call | None] = {}

    # -- life cycle -------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return bool(self._handles)

    def enable(self) -> Probe:
        """Install the hooks (no-op if already enabled)."""
        if self.model is None:
            raise RuntimeError("probe was removed; attach a new one with attach_probe")
        if self.enabled:
            return self
        self._handles.append(self.model.register_forward_pre_hook(self._on_model_call))
        for site in self.sites:
            handles = [
                site.bn.register_forward_hook(self._bn_hook(site)),
                site.neuron.register_forward_hook(self._neuron_hook(site)),
            ]
            if site.pool is not None:
                handles.append(site.pool.register_forward_hook(self._pool_hook(site)))
            self._site_handles[site] = handles
            self._handles += handles
        return self

    def disable(self) -> Probe:
        """Remove the hooks; records and the step counter stay."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._site_handles.clear()
        self._open = False
        return self

    @property
    def samples_next(self) -> bool:
        """Whether the probe measures the next step (run it eagerly under a CUDA graph)."""
        return self.enabled and (self.step + 1) % self.every == 0

    def skip_step(self) -> None:
        """Count a step that ran without the hooks (a replayed CUDA graph): not measured."""
        self.step += 1
        self._sampled = False
        self._open = False
        self._calls = {}
        self._current = {}

    def remove(self) -> None:
        """Remove the hooks and forget the model; records stay readable."""
        self.disable()
        self.model = None

    def clear(self) -> None:
        """Drop all records."""
        self.records.clear()

    def __enter__(self) -> Probe:
        return self.enable()

    def __exit__(self, *exc: object) -> None:
        try:
            self._calls, self._current = {}, {}  # release maps saved by an unfinished step
        finally:
            self.remove()

    def __repr__(self) -> str:
        state = "removed" if self.model is None else "enabled" if self.enabled else "disabled"
        return f"Probe({len(self.sites)} sites, every={self.every}, {state}, {len(self.records)} records)"

    # -- output -----------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """Tidy DataFrame: one row per record × timestep, columns `FRAME_COLUMNS`, ordered by
        step, site (forward order) and t. Converting the tensors is the only host sync."""
        rows = []
        rank = {site.name: i for i, site in enumerate(self.sites)}
        for r in sorted(self.records, key=lambda r: (r.step, rank.get(r.site, -1), r.t0)):
            cols = [
                r.precision,
                r.mass_at_argmax,
                r.tie_rate,
                r.spike_rate,
                r.windows,
                r.grad_abs_mean,
            ]
            values = torch.stack([c.detach().double().cpu() for c in cols]).T.tolist()
            for i, (prec, mass, tie, rate, win, gam) in enumerate(values):
                rows.append(
                    (
                        r.step,
                        r.site,
                        r.variant,
                        r.t0 + i,
                        prec,
                        mass,
                        tie,
                        rate,
                        int(win),
                        r.windows_total,
                        gam,
                    )
                )
        return pd.DataFrame(rows, columns=FRAME_COLUMNS)

    # -- hooks ------------------------------------------------------------------------------
    def _new_step(self) -> None:
        self.step += 1
        self._sampled = self.step % self.every == 0
        self._open = True
        self._calls = {}
        self._current = {}

    def _on_model_call(self, module: nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled():
            self._new_step()

    def _bn_hook(self, site: Site):
        def hook(module: nn.Module, args: tuple, x: torch.Tensor) -> torch.Tensor | None:
            if not (torch.is_grad_enabled() and x.requires_grad):
                return None
            if not self._open:
                self._new_step()
            self._current[site] = None
            if not self._sampled:
                x.register_hook(self._close_step)
                return None
            calls = self._calls.setdefault(site, [])
            # captum's pattern: downstream gets a clone, so in-place ops there cannot touch x
            # or the hook registered on it, and x itself can be kept for the window analysis.
            x_down = x.clone()
            kept = x.detach()
            if site.pool is not None:  # the max-pool kernels' layout, while x is still in cache
                kept = _fast_layout(_flat(kept))
            call = _Call(site, self.step, len(calls), kept, x.shape, x_down.detach())
            calls.append(call)
            self._current[site] = call
            x.register_hook(lambda g: self._on_grad_x(call, g))
            return x_down

        return hook

    def _close_step(self, grad: torch.Tensor) -> None:
        self._open = False  # a backward reached the sites: the next site forward is a new step

    def _check(self, call: _Call, part: str, inp: Any) -> bool:
        """On an unchecked foreign site, whether ``part`` ("neuron" or "pool") reads what the
        site's order says it does; a site that fails is dropped."""
        site = call.site
        if site not in self._unchecked:
            return True
        after_x = call.order is None  # the other part has not run yet
        if after_x:
            source, what = call.x_alias, "x (its BN's output)"
        elif part == "neuron":
            source, what = call.y_alias, "its pool's output"
        else:
            source, what = call.spikes_alias, "its neuron's output"
        if not _reads(inp, source):
            kind = type(getattr(site, part)).__name__
            self._drop(site, f"the input of its {part} ({kind}) is not {what} nor a view of it")
            return False
        call.checked.add(part)
        if call.checked >= ({"neuron", "pool"} if site.pool is not None else {"neuron"}):
            self._unchecked.discard(site)
            call.y_alias = None
        return True

    def _drop(self, site: Site, reason: str) -> None:
        warnings.warn(
            f"probe: dropping site {site.name!r}, matched by module order only: {reason}",
            stacklevel=2,
        )
        self._unchecked.discard(site)
        self.sites.remove(site)
        for handle in self._site_handles.pop(site, ()):
            handle.remove()
        for call in self._calls.pop(site, ()):
            _release(call)
        self._current.pop(site, None)

    def _neuron_hook(self, site: Site):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            call = self._current.get(site)
            if call is None or call.skip or call.T is not None:
                return
            inp = args[0]
            if not self._check(call, "neuron", inp):
                return
            multi = getattr(module, "step_mode", "s") == "m"
            call.T = inp.shape[0] if multi else 1
            call.order = call.order or "neuron_first"
            spikes = out.detach()
            call.spike_rate = _per_t(spikes, call.T).float().mean(1)
            if site.pool is not None and call.order == "neuron_first":
                call.spikes_alias = spikes
                call.binary = isinstance(module, BaseNode) and getattr(
                    module.surrogate_function, "spiking", True
                )  # Heaviside output: exactly 0 or 1
            if self.keep_maps:
                call.maps["spikes"] = spikes.clone()

        return hook

    def _pool_hook(self, site: Site):
        def hook(module: nn.Module, args: tuple, out: Any) -> Any:
            call = self._current.get(site)
            if call is None or call.skip or call.hit is not None or call.share is not None:
                return None
            if not self._check(call, "pool", args[0]):
                return None
            call.order = call.order or "pool_first"
            y = out[0] if isinstance(out, tuple) else out  # MaxPool2d(return_indices=True)
            if not y.requires_grad:  # e.g. run under torch.no_grad: routes nothing to x
                _release(call)
                return None
            pooled = args[0].detach()
            self._measure_windows(call, module, _flat(pooled))
            if self.keep_maps:
                call.maps["pooled"] = pooled.clone()
            else:
                call.x = None
            y_down = y.clone()
            if site in self._unchecked:  # the neuron is checked against it
                call.y_alias = y_down.detach()
            y.register_hook(lambda g: self._on_grad_y(call, g))
            return (y_down, *out[1:]) if isinstance(out, tuple) else y_down

        return hook

    def _measure_windows(self, call: _Call, pool: nn.Module, pooled: torch.Tensor) -> None:
        """Per window: landing == argmax of x (max pools), share at the argmax (avg pools) and
        ties of the maximum, all vectorised over windows on max-pool kernels."""
        pooled_is_x = _same_memory(pooled, call.x_alias)
        binary = call.binary and _same_memory(pooled, call.spikes_alias)
        call.x_alias = call.spikes_alias = None
        is_max = isinstance(pool, nn.MaxPool2d)
        x = call.x
        argmax = _max_indices(x, pool)[1]  # first index on exact ties, as the pool's backward
        if is_max and not pooled_is_x:  # eq. (7): the pool routes to its maximum over spikes
            seen = _fast_layout(pooled)
            landing = _max_indices(seen, pool)[1]
            call.hit = landing == argmax
        else:  # eq. (11): a max-pool over x routes to the argmax of x; avg-pools everywhere
            seen, landing = x, argmax if is_max else None
        geometry = _pool_args(pool)
        _, n_real = _taps(geometry, tuple(x.shape[-2:]), tuple(argmax.shape[-2:]))
        if is_max and binary and _pair(geometry[3]) == (1, 1):
            # a tie is several spikes, or none in a window of 2+ positions
            count = _spike_count(seen, pool)
            call.tie = (count > 1) | ((count == 0) & (n_real > 1).to(count.device))
        else:
            call.tie = _ties(seen, argmax if landing is None else landing, pool)
        if is_max and pooled_is_x:
            call.hit = torch.ones(argmax.shape, dtype=torch.bool, device=argmax.device)
        elif not is_max:
            call.share = (1.0 / n_real).to(argmax.device)  # float64: 1/9 stays 1/9
        if self.keep_maps:
            call.maps["landing"] = landing if landing is not None else torch.full_like(argmax, -1)
            call.maps["argmax"] = argmax
            call.maps["tie"] = call.tie
            mass = call.hit.double() if call.hit is not None else call.share.expand_as(argmax)
            call.maps["mass"] = mass

    def _on_grad_y(self, call: _Call, grad: torch.Tensor) -> None:
        call.routed = _flat(grad) != 0
        if self.keep_maps:
            call.maps["grad_y"] = grad.detach().clone()

    def _on_grad_x(self, call: _Call, grad: torch.Tensor) -> None:
        self._open = False  # a backward reached the sites: the next site forward is a new step
        site = call.site
        if not call.skip and site in self._unchecked:
            part = "pool" if "neuron" in call.checked else "neuron"
            self._drop(site, f"its {part} did not run on x (its BN's output) before backward")
        if call.skip:
            _release(call)
            return
        call.x_alias = call.spikes_alias = None
        T = call.T or (call.x_shape[0] if len(call.x_shape) == 5 else 1)
        earlier = self._calls.get(site, [])[: call.index] if call.step == self.step else []
        t0 = sum(c.T or 1 for c in earlier)
        g = grad.detach()
        nan = torch.full((T,), math.nan, device=g.device)  # float32, whatever dtype x has
        spike_rate = call.spike_rate if call.spike_rate is not None else nan
        if site.pool is None:
            precision = mass = tie_rate = nan
            windows = torch.zeros(T, dtype=torch.long, device=g.device)
            total = 0
        else:
            routed = call.routed if call.routed is not None else torch.zeros_like(call.tie)
            routed = _per_t(routed, T)
            windows = routed.sum(1)
            total = routed.shape[1]
            denom = windows.clamp(min=1).float()
            empty = windows == 0
            tie_rate = (_per_t(call.tie, T) & routed).sum(1) / denom
            if call.hit is not None:
                precision = (_per_t(call.hit, T) & routed).sum(1) / denom
                mass = precision
            else:
                precision = nan
                # the share depends on the window's place only: count routed windows per place
                per_place = routed.reshape(T, -1, call.share.numel()).sum(1)
                mass = (per_place.double() * call.share.flatten()).sum(1) / denom
            precision, mass, tie_rate = (
                torch.where(empty, nan, v) for v in (precision, mass, tie_rate)
            )
            if self.keep_maps:
                call.maps["routed"] = call.routed
        variant = site.variant or _foreign_label(site, call.order)
        maps = None
        if self.keep_maps:
            shape5 = (T, -1)
            maps = {k: v.reshape(*shape5, *v.shape[-3:]) for k, v in call.maps.items()}
            maps["x"] = call.x.reshape(*shape5, *call.x_shape[-3:])
            maps["grad_x"] = g.clone().reshape(*shape5, *g.shape[-3:])
        self.records.append(
            SiteRecord(
                step=call.step,
                site=site.name,
                variant=variant,
                t0=t0,
                precision=precision,
                mass_at_argmax=mass,
                tie_rate=tie_rate,
                spike_rate=spike_rate,
                windows=windows,
                windows_total=total,
                grad_abs_mean=torch.linalg.vector_norm(_per_t(g, T), 1, dim=1, dtype=torch.float32)
                / (g.numel() // T),
                maps=maps,
            )
        )
        call.x = None


def _release(call: _Call) -> None:
    """Mark a call as leaving no record and let go of what it holds."""
    call.skip = True
    call.x = call.x_alias = call.spikes_alias = call.y_alias = None
    call.maps.clear()


def _foreign_label(site: Site, order: str | None) -> str:
    if site.pool is None:
        return "no_pool"
    pool = "maxpool" if isinstance(site.pool, nn.MaxPool2d) else "avgpool"
    return f"lif_{pool}" if order == "neuron_first" else f"{pool}_lif"


def attach_probe(
    model: nn.Module,
    sites: list[str] | None = None,
    every: int = 1,
    keep_maps: bool = False,
) -> Probe:
    """Attach an enabled `Probe` to every downsampling site of ``model``.

    Args:
        model: Any module: our backbones, a bare `DownsampleSite`, or a foreign model such as
            spikingjelly's ``spikformer_cifar10`` (sites found by pattern, see `find_sites`).
        sites: Qualified module names to probe instead of automatic discovery.
        every: Measure every ``every``-th training step.
        keep_maps: Also keep per-window maps and x, dL/dx in the records.

    Returns:
        The enabled probe; use it as a context manager to remove its hooks afterwards.

    Raises:
        ValueError: No site found, or a bad name or ``every``.

    Example:
        >>> from gradprobe.downsample import build_downsample
        >>> site = build_downsample("maxpool_lif", 3, 8)
        >>> with attach_probe(site) as probe:
        ...     site(torch.rand(2, 1, 3, 8, 8, requires_grad=True)).sum().backward()
        >>> probe.to_frame()["precision"].tolist()
        [1.0, 1.0]
    """
    found = find_sites(model, sites)
    if not found:
        raise ValueError(
            f"no downsampling site found in {type(model).__name__}; pass sites=[module names]"
        )
    return Probe(model, found, every=every, keep_maps=keep_maps).enable()


def summarize(frame: pd.DataFrame, by: tuple[str, ...] = ("site", "variant")) -> pd.DataFrame:
    """Aggregate a probe frame: window-weighted precision, mass and tie rate; mean spike rate.

    Args:
        frame: Output of `Probe.to_frame` (several probes' frames may be concatenated).
        by: Grouping columns.

    Returns:
        One row per group with ``precision``, ``mass_at_argmax``, ``tie_rate``,
        ``spike_rate``, ``windows`` (summed) and ``grad_abs_mean``.
    """

    weighted = ["precision", "mass_at_argmax", "tie_rate"]
    w = frame["windows"].astype(float)
    parts = frame[list(by)].assign(
        windows=frame["windows"],
        spike_rate=frame["spike_rate"],
        grad_abs_mean=frame["grad_abs_mean"],
        **{f"_{c}": frame[c] * w for c in weighted},
    )
    groups = parts.groupby(list(by), sort=False)
    out = groups[["spike_rate", "grad_abs_mean"]].mean()
    sums = groups[["windows", *(f"_{c}" for c in weighted)]].sum(min_count=1)
    total = sums["windows"].where(sums["windows"] > 0)  # no window: NaN, not 0/0 warnings
    for c in weighted:
        out[c] = sums[f"_{c}"] / total
    out["windows"] = sums["windows"].fillna(0).astype("int64")
    columns = [*weighted, "spike_rate", "windows", "grad_abs_mean"]
    return out[columns].reset_index()
