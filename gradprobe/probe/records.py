"""What a probe keeps and how it is read: `SiteRecord`, the tidy frame and its summary.

A `SiteCall` is one call of one site while it runs: the probe's hooks fill it in forward and it
closes into a `SiteRecord` when the gradient reaches x. A record holds that call as tensors of
length T, still on the device; `to_frame` turns records into one row per record x time step
(the only host sync) and `summarize` aggregates such rows, weighting every window-based metric
by its windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from gradprobe.probe.sites import Site, foreign_label
from gradprobe.probe.windows import (
    PoolGeometry,
    Windows,
    flatten_maps,
    grad_abs_mean,
    measure_windows,
    no_window_metrics,
    window_metrics,
)

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


@dataclass
class SiteRecord:
    """What one call of one site recorded on one backward pass (tensors of length T).

    Attributes:
        step: Probe step counter (see `gradprobe.probe.Probe`).
        site: Site name.
        variant: Variant label.
        t0: Timestep of the first entry (non-zero when a site is called several times per
            step, e.g. single-step neurons).
        precision, mass_at_argmax, tie_rate, spike_rate, windows, grad_abs_mean: Per timestep,
            as defined in `gradprobe.probe`.
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


def _same_memory(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    return b is not None and a.data_ptr() == b.data_ptr() and a.numel() == b.numel()


@dataclass
class SiteCall:
    """One forward call of one site, from its BN's output to the gradient at x.

    The probe's hooks fill it: the BN's opens it with x, the neuron's adds T, the spike rate
    and the spikes' alias, the pool's runs `measure`, the gradient at the pool output marks
    the routed windows, and the gradient at x closes it into a `SiteRecord` (`close`).
    """

    site: Site
    step: int
    index: int
    x: torch.Tensor | None  # the saved pre-spike map, dropped once measured (unless kept)
    x_shape: torch.Size
    keep_maps: bool
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
    windows: Windows | None = None  # the pool call's window analysis
    routed: torch.Tensor | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def release(self) -> None:
        """Mark the call as leaving no record and let go of what it holds."""
        self.skip = True
        self.x = self.x_alias = self.spikes_alias = self.y_alias = None
        self.maps.clear()

    def measure(
        self, geometry: PoolGeometry, pooled: torch.Tensor, rule: str = "first_max"
    ) -> None:
        """Run the window analysis on the map that decides the routing (``pooled``, detached:
        what the pool read, or its guide) under the pool's ``rule`` (`pool_routing`)."""
        flat = flatten_maps(pooled)
        # Which map decides is told by memory: x itself (eq. (11)), or the spikes, or another.
        reads_x = _same_memory(flat, self.x_alias)
        binary = self.binary and _same_memory(flat, self.spikes_alias)
        self.x_alias = self.spikes_alias = None
        self.windows = measure_windows(
            self.x, geometry, None if reads_x else flat, binary=binary, split=rule == "split"
        )
        if self.keep_maps:
            self.maps.update(self.windows.maps())
            self.maps["pooled"] = pooled.clone()
        else:
            self.x = None

    def close(self, grad: torch.Tensor, t0: int) -> SiteRecord:
        """The record of the call, once ``grad`` (dL/dx) arrived; ``t0``: its first timestep."""
        self.x_alias = self.spikes_alias = None
        T = self.T or (self.x_shape[0] if len(self.x_shape) == 5 else 1)
        g = grad.detach()
        if self.site.pool is None:
            metrics = no_window_metrics(T, g.device)
        else:
            metrics = window_metrics(self.windows, self.routed, T)
            if self.keep_maps:
                self.maps["routed"] = self.routed
        rate = self.spike_rate
        if rate is None:  # the neuron did not run in this call
            rate = torch.full((T,), math.nan, device=g.device)
        maps = None
        if self.keep_maps:
            maps = {k: v.reshape(T, -1, *v.shape[-3:]) for k, v in self.maps.items()}
            maps["x"] = self.x.reshape(T, -1, *self.x_shape[-3:])
            maps["grad_x"] = g.clone().reshape(T, -1, *g.shape[-3:])
        self.x = None
        return SiteRecord(
            step=self.step,
            site=self.site.name,
            variant=self.site.variant or foreign_label(self.site, self.order),
            t0=t0,
            precision=metrics.precision,
            mass_at_argmax=metrics.mass_at_argmax,
            tie_rate=metrics.tie_rate,
            spike_rate=rate,
            windows=metrics.windows,
            windows_total=metrics.windows_total,
            grad_abs_mean=grad_abs_mean(g, T),
            maps=maps,
        )


def sort_records(records: Iterable[SiteRecord], sites: Sequence[str] = ()) -> list[SiteRecord]:
    """Records by step, site (in the order of ``sites``; others first) and first timestep."""
    rank = {name: i for i, name in enumerate(sites)}
    return sorted(records, key=lambda r: (r.step, rank.get(r.site, -1), r.t0))


def to_frame(records: Iterable[SiteRecord], sites: Sequence[str] = ()) -> pd.DataFrame:
    """Tidy DataFrame of ``records``: one row per record x timestep, columns `FRAME_COLUMNS`.

    Args:
        records: Records of one probe (or several).
        sites: Site names in forward order, to order the rows by (`sort_records`).

    Returns:
        The frame; converting the tensors is the only host sync.
    """
    rows = []
    for r in sort_records(records, sites):
        cols = [r.precision, r.mass_at_argmax, r.tie_rate, r.spike_rate, r.windows, r.grad_abs_mean]
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


def summarize(frame: pd.DataFrame, by: tuple[str, ...] = ("site", "variant")) -> pd.DataFrame:
    """Aggregate a probe frame: window-weighted precision, mass and tie rate; mean spike rate.

    Args:
        frame: Output of `to_frame` (several probes' frames may be concatenated).
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
