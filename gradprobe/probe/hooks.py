"""The hook life cycle: a `Probe` catches each site's tensors and hands them to the analysis.

Hooks follow captum's pattern: a forward hook on the BN (and on the pool) keeps the module's
output, registers ``Tensor.register_hook`` on it and hands a clone downstream, so in-place ops
after the site cannot change what was kept or break the hook (``register_full_backward_hook``
does break). Outputs and gradients are unchanged, since a clone is the identity in value and in
backward. A pool output that does not require grad (a part run under ``torch.no_grad``) routes
nothing, and that call of the site leaves no record. The pool's forward hook runs the window
analysis of `gradprobe.probe.windows` while the maps are fresh; only per-window booleans are
kept until backward, whose hooks reduce them per time step. No value leaves the device before
`Probe.to_frame`.

Foreign sites are matched by module registration order, which is not dataflow. So on its first
measured call each foreign site checks that its neuron and pool read x (or each other's output)
themselves or a view of it; a site that fails is dropped with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd
import torch
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradprobe.pooling import pool_routing
from gradprobe.probe.records import SiteCall, SiteRecord, to_frame
from gradprobe.probe.sites import Site, find_sites, misread
from gradprobe.probe.windows import PoolGeometry, pool_layout, routed_windows, spike_rate


class Probe:
    """Records gradient landing at downsampling sites; see `gradprobe.probe` for the metrics.

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
        self._calls: dict[Site, list[SiteCall]] = {}
        self._current: dict[Site, SiteCall | None] = {}

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
        return to_frame(self.records, [site.name for site in self.sites])

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
            if site.pool is not None:  # the pooling kernels' layout, while x is still in cache
                kept = pool_layout(kept)
            call = SiteCall(
                site, self.step, len(calls), kept, x.shape, self.keep_maps, x_down.detach()
            )
            calls.append(call)
            self._current[site] = call
            x.register_hook(lambda g: self._on_grad_x(call, g))
            return x_down

        return hook

    def _close_step(self, grad: torch.Tensor) -> None:
        self._open = False  # a backward reached the sites: the next site forward is a new step

    def _check(self, call: SiteCall, part: str, inp: Any) -> bool:
        """On an unchecked foreign site, whether ``part`` ("neuron" or "pool") reads what the
        site's order says it does; a site that fails is dropped."""
        site = call.site
        if site not in self._unchecked:
            return True
        after_x = call.order is None  # the other part has not run yet
        source = (
            call.x_alias if after_x else call.y_alias if part == "neuron" else call.spikes_alias
        )
        reason = misread(site, part, inp, source, after_x)
        if reason:
            self._drop(site, reason)
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
            call.release()
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
            call.spike_rate = spike_rate(spikes, call.T)
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
            if call is None or call.skip or call.windows is not None:
                return None
            if not self._check(call, "pool", args[0]):
                return None
            call.order = call.order or "pool_first"
            y = out[0] if isinstance(out, tuple) else out  # MaxPool2d(return_indices=True)
            if not y.requires_grad:  # e.g. run under torch.no_grad: routes nothing to x
                call.release()
                return None
            rule, decides = pool_routing(module, args)  # the pool's own rule, or PyTorch's
            call.measure(PoolGeometry.of(module), decides.detach(), rule)
            y_down = y.clone()
            if site in self._unchecked:  # the neuron is checked against it
                call.y_alias = y_down.detach()
            y.register_hook(lambda g: self._on_grad_y(call, g))
            return (y_down, *out[1:]) if isinstance(out, tuple) else y_down

        return hook

    def _on_grad_y(self, call: SiteCall, grad: torch.Tensor) -> None:
        call.routed = routed_windows(grad)
        if self.keep_maps:
            call.maps["grad_y"] = grad.detach().clone()

    def _on_grad_x(self, call: SiteCall, grad: torch.Tensor) -> None:
        self._open = False  # a backward reached the sites: the next site forward is a new step
        site = call.site
        if not call.skip and site in self._unchecked:
            part = "pool" if "neuron" in call.checked else "neuron"
            self._drop(site, f"its {part} did not run on x (its BN's output) before backward")
        if call.skip:
            call.release()
            return
        earlier = self._calls.get(site, [])[: call.index] if call.step == self.step else []
        self.records.append(call.close(grad, t0=sum(c.T or 1 for c in earlier)))


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
