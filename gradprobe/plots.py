"""Figures of gradient landing: one window, one map, per-timestep metrics, attributions.

Every function takes tensors or tidy frames (what `gradprobe.probe` records, what
`gradprobe.explore` returns) and returns a matplotlib ``Figure``; nothing is shown or saved
here, so the same calls serve notebooks (inline display) and tests (``fig.savefig``).

One marker vocabulary throughout: a hollow white circle is the window's argmax of x (where
eq. (11) lands the gradient), a cross is where the variant actually lands it, green when it
hits the argmax and red (joined to the argmax by a line) when it misses. Variants are named
and ordered by `gradprobe.labels`.

Figures of a sweep's results over training (Fig. 2, precision curves, precision against
accuracy) live in ``reports.figures``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from gradprobe.labels import sort_variants, variant_label

HIT, MISS, ARGMAX = "#2ca02c", "#d62728", "white"


def _rc(flat: torch.Tensor | np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    # Flat positions in an H x W plane (as max_pool2d returns them) to rows and columns.
    flat = np.asarray(flat).reshape(-1).astype(np.int64)
    return flat // width, flat % width


def _np(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _annotate(ax: plt.Axes, values: np.ndarray, fmt: str, light_high: bool = True) -> None:
    # Text must contrast with the cell: dark text where the colormap is light.
    low, high = float(values.min()), float(values.max())
    cut = low + 0.6 * (high - low) if high > low else high + 1
    for (r, c), v in np.ndenumerate(values):
        light = (v >= cut) == light_high
        ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=9,
                color="black" if light else "white")  # fmt: skip


def _box(ax: plt.Axes, r: int, c: int, color: str, style: str = "-") -> None:
    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec=color, lw=3, ls=style))


def plot_window(
    x: torch.Tensor, spikes: torch.Tensor, grads: Mapping[str, torch.Tensor], title: str = ""
) -> Figure:
    """One pooling window: x, its spikes, and where each variant sends the window's gradient.

    Args:
        x: Pre-spike window ``[k, k]`` (one time step).
        spikes: The neuron's spikes on x ``[k, k]``.
        grads: Variant → dL/dx on the window ``[k, k]``; shown as the share of the window's
            total |dL/dx| at each position.
        title: Figure title.

    Example:
        >>> fig = plot_window(torch.eye(3), torch.eye(3), {"maxpool_lif": torch.eye(3)})
    """
    x, spikes = _np(x), _np(spikes)
    r, c = divmod(int(x.argmax()), x.shape[-1])
    n = 2 + len(grads)
    fig, axes = plt.subplots(1, n, figsize=(2.9 * n, 3.4), layout="constrained")
    axes[0].imshow(x, cmap="viridis")
    _annotate(axes[0], x, ".2f")
    _box(axes[0], r, c, ARGMAX)
    axes[0].set_title("pre-spike x\n(white box: argmax)", fontsize=10)
    axes[1].imshow(spikes, cmap="gray", vmin=0, vmax=1)
    _annotate(axes[1], spikes, ".0f")
    spiking = np.flatnonzero(spikes)
    if len(spiking):
        _box(axes[1], *divmod(int(spiking[0]), x.shape[-1]), "orange")
    axes[1].set_title(f"spikes: {int(spikes.sum())} tie\n(orange box: first spike)", fontsize=10)
    for ax, (variant, grad) in zip(axes[2:], grads.items(), strict=True):
        share = np.abs(_np(grad))
        share = share / share.sum() if share.sum() > 0 else share
        ax.imshow(share, cmap="Reds", vmin=0, vmax=1)
        _annotate(ax, share, ".2f", light_high=False)
        _box(ax, r, c, "black", "--")
        ax.set_title(f"{variant_label(variant)}\ndL/dx share at argmax: {float(share[r, c]):.2f}",
                     fontsize=10)  # fmt: skip
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def draw_landing(
    ax: plt.Axes,
    x: torch.Tensor,
    landing: torch.Tensor,
    argmax: torch.Tensor,
    title: str = "",
    cmap: str = "viridis",
) -> float:
    """Draw map ``x`` ``[H, W]`` with each window's argmax (circle) and landing (cross).

    Args:
        ax: Axes to draw on.
        x: The map shown (the pre-spike x, or the spikes).
        landing: Flat positions ``[Ho, Wo]`` in ``H * W`` where windows send their gradient
            (negative entries, windows without a single landing, are left out).
        argmax: Flat positions ``[Ho, Wo]`` of each window's argmax of x.
        title: Axes title; the fraction of landings on the argmax is appended.
        cmap: Colormap of ``x``.

    Returns:
        The fraction of windows whose landing is the argmax (NaN without landings).
    """
    x, landing, argmax = _np(x), _np(landing).reshape(-1), _np(argmax).reshape(-1)
    width = x.shape[-1]
    ax.imshow(x, cmap=cmap)
    ar, ac = _rc(argmax, width)
    ax.scatter(ac, ar, s=40, facecolors="none", edgecolors=ARGMAX, linewidths=1.2)
    known = landing >= 0
    lr, lc = _rc(landing[known], width)
    hit = (landing == argmax)[known]
    for r0, c0, r1, c1 in zip(lr[~hit], lc[~hit], ar[known][~hit], ac[known][~hit], strict=True):
        ax.plot([c0, c1], [r0, r1], color=MISS, lw=1)
    ax.scatter(lc, lr, s=30, marker="x", c=[HIT if h else MISS for h in hit], lw=1.5)
    precision = float(hit.mean()) if len(hit) else float("nan")
    ax.set_title(f"{title}\nlanding = argmax: {precision:.2f}" if title else f"{precision:.2f}")
    ax.set_xticks([])
    ax.set_yticks([])
    return precision


def plot_site_maps(
    x: torch.Tensor,
    argmax: torch.Tensor,
    landings: Mapping[str, torch.Tensor],
    spikes: torch.Tensor | None = None,
    title: str = "",
    region: tuple[int, int, int, int] | None = None,
) -> Figure:
    """A site's map: x, its spikes, and one landing-vs-argmax panel per variant or rule.

    Args:
        x: Pre-spike map ``[H, W]`` (one sample, channel and time step).
        argmax: Flat positions ``[Ho, Wo]`` of each window's argmax of x.
        landings: Panel title (a variant name is shown by its paper name, any other text as
            is, e.g. "eq. (7)") → flat landing positions ``[Ho, Wo]``.
        spikes: The neuron's spikes on x ``[H, W]`` (the baseline's, full resolution), if any.
        title: Figure title.
        region: Zoom on rows ``[r0, r1)`` and columns ``[c0, c1)`` as ``(r0, r1, c0, c1)``;
            the fractions in the titles still count every window.

    Example:
        >>> x = torch.rand(8, 8); idx = torch.zeros(4, 4, dtype=torch.long)
        >>> fig = plot_site_maps(x, idx, {"eq. (7)": idx})
    """
    panels = [("pre-spike x, argmax (o)", x, "viridis")]
    if spikes is not None:
        panels.append(("spikes, argmax of x (o)", spikes, "gray"))
    n = len(panels) + len(landings)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.8), layout="constrained")
    for ax, (name, m, cmap) in zip(axes, panels, strict=False):
        ax.imshow(_np(m), cmap=cmap)
        ar, ac = _rc(_np(argmax), m.shape[-1])
        ax.scatter(ac, ar, s=40, facecolors="none", edgecolors=ARGMAX if cmap != "gray" else "red")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, (name, landing) in zip(axes[len(panels) :], landings.items(), strict=True):
        draw_landing(ax, x, landing, argmax, variant_label(name))
    if region is not None:
        r0, r1, c0, c1 = region
        for ax in axes:
            ax.set_xlim(c0 - 0.5, c1 - 0.5)
            ax.set_ylim(r1 - 0.5, r0 - 0.5)
    if title:
        fig.suptitle(title)
    return fig


def plot_timestep_metrics(
    frame: pd.DataFrame, metrics: Sequence[str] = ("precision", "tie_rate"), hue: str = "variant"
) -> Figure:
    """Probe metrics per time step (x), one column per site and one row per metric.

    Args:
        frame: `gradprobe.probe.Probe.to_frame` rows (several concatenated), with ``site``,
            ``t``, ``hue`` and the metric columns. Undefined (NaN) values are left out, e.g.
            the precision of ``avgpool_lif`` and every window metric of ``strided_conv``.
        metrics: Metric columns, one row of panels each.
        hue: Column that colours the bars.
    """
    sites = list(dict.fromkeys(frame["site"]))
    order = sort_variants(frame[hue]) if hue == "variant" else None
    data = frame.assign(**{hue: frame[hue].map(variant_label)}) if hue == "variant" else frame
    hue_order = [variant_label(v) for v in order] if order else None
    fig, axes = plt.subplots(len(metrics), len(sites), squeeze=False, layout="constrained",
                             figsize=(3.8 * len(sites) + 2.2, 2.6 * len(metrics)))  # fmt: skip
    for col, site in enumerate(sites):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            sns.barplot(data=data[data["site"] == site], x="t", y=metric, hue=hue,
                        hue_order=hue_order, errorbar=None, ax=ax,
                        legend=row == 0 and col == len(sites) - 1)  # fmt: skip
            ax.set_ylim(0, 1.05)
            ax.set_ylabel(metric.replace("_", " ") if col == 0 else "")
            if row == 0:
                ax.set_title(site)
    legend = axes[0][-1].get_legend()
    if legend is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1.0), title=None)
    return fig


def plot_site_heatmaps(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("precision", "tie_rate", "lif_ratio"),
    index: Sequence[str] = ("model", "site"),
) -> Figure:
    """One annotated heatmap per metric: rows ``index`` (backbone, site), columns variants.

    Args:
        table: Rows with ``variant``, the ``index`` columns and the metrics (e.g.
            `gradprobe.explore.site_report` frames concatenated). NaN cells stay blank.
        metrics: Metric columns, one heatmap each.
        index: Columns naming a row.
    """
    columns = sort_variants(table["variant"])
    rows = table.drop_duplicates(list(index))[list(index)]
    labels = [" · ".join(str(v) for v in r) for r in rows.itertuples(index=False)]
    fig, axes = plt.subplots(1, len(metrics), squeeze=False, layout="constrained",
                             figsize=(3.0 * len(metrics) + 3.5, 0.38 * len(rows) + 1.8))  # fmt: skip
    for i, (ax, metric) in enumerate(zip(axes[0], metrics, strict=True)):
        grid = table.pivot_table(index=list(index), columns="variant", values=metric,
                                 aggfunc="mean", dropna=False, sort=False)  # fmt: skip
        grid = grid.reindex(index=pd.MultiIndex.from_frame(rows), columns=columns)
        sns.heatmap(grid.to_numpy(dtype=float), annot=True, fmt=".2f", vmin=0, vmax=1,
                    cmap="magma", cbar=False, ax=ax, annot_kws={"fontsize": 8},
                    xticklabels=[variant_label(v) for v in columns],
                    yticklabels=labels if i == 0 else False)  # fmt: skip
        ax.set_title(metric.replace("_", " "))
        ax.tick_params(axis="x", labelrotation=35)
    return fig


def plot_attributions(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    labels: torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
) -> Figure:
    """Images (first column) beside |attribution| summed over channels for each variant.

    Args:
        images: ``[B, 3, H, W]`` in [0, 1].
        maps: Variant → attribution ``[B, C, h, w]`` (any ``h, w``: drawn over the image's
            extent, so a downsampled map lines up with the image).
        labels: Class per image, for the row labels.
        classes: Class names.
    """
    B, _, H, W = images.shape
    n = 1 + len(maps)
    fig, axes = plt.subplots(B, n, squeeze=False, figsize=(2.0 * n, 2.0 * B + 0.4),
                             layout="constrained")  # fmt: skip
    for b in range(B):
        axes[b][0].imshow(_np(images[b].permute(1, 2, 0).clamp(0, 1)))
        if labels is not None:
            name = classes[int(labels[b])] if classes else str(int(labels[b]))
            axes[b][0].set_ylabel(name)
        for ax, (variant, attr) in zip(axes[b][1:], maps.items(), strict=True):
            heat = _np(attr[b].abs().sum(0))
            heat = heat / heat.max() if heat.max() > 0 else heat
            ax.imshow(heat, cmap="magma", vmin=0, vmax=1, extent=(0, W, H, 0))
            if b == 0:
                ax.set_title(variant_label(variant), fontsize=9)
    axes[0][0].set_title("input", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
