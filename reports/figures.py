"""Figures of a sweep: Fig. 2 (loss and accuracy per epoch), the gradient-precision curves,
and precision against accuracy.

`plot_fig2` and `plot_precision` write one figure per configuration (dataset, L-D, T, epochs)
as PNG and PDF, with a line per model (family × variant) and a band over seeds from seaborn's
``lineplot``: ``errorbar="sd"`` (mean ± one sample sd, the default) or ``"ci"`` (95 % bootstrap
interval of the mean, seeded so that reruns are identical). Files carry no creation date or
software stamp, so the same inputs give the same bytes. `plot_precision_vs_accuracy` returns
one figure for a notebook to show.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from reports.load import CELL_KEYS, Results
from reports.output import Staged, emit
from reports.paper import dataset_label, method_labels
from reports.precision import PROBE_METRICS
from reports.stats import sort_cells

ERRORBARS = ("sd", "ci")
FIG2_PANELS = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "test_top1": "test top-1 (%)",
}
_SAVE = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}}


def _errorbar(kind: str) -> str | tuple[str, int]:
    if kind not in ERRORBARS:
        raise ValueError(f"unknown errorbar {kind!r}; choices: {', '.join(ERRORBARS)}")
    return "sd" if kind == "sd" else ("ci", 95)


def _config_name(prefix: str, dataset: str, arch: str, T: object, epochs: object) -> str:
    t = "na" if pd.isna(T) else int(T)
    e = "na" if pd.isna(epochs) else int(epochs)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{prefix}_{dataset}_{arch}_T{t}_{e}E")
    return re.sub(r"-+(?=_)", "", name)


def _configs(runs: pd.DataFrame):
    return runs.groupby(["dataset", "arch", "T", "epochs"], dropna=False, sort=False)


def _model_order(frame: pd.DataFrame, labels: Mapping[str, str] | None) -> list[str]:
    ordered = sort_cells(frame.drop_duplicates(["family", "variant"]), ["family", "variant"])
    return method_labels(ordered, labels)


def model_palette(
    runs: pd.DataFrame, labels: Mapping[str, str] | None = None
) -> dict[str, tuple[float, float, float]]:
    """One colour per model (family × variant) of a store, the same in every figure.

    Args:
        runs: Rows with ``family`` and ``variant`` (runs or snapshots).
        labels: Variant labels from the run documents (`reports.load.Results.labels`).
    """
    order = _model_order(runs, labels)
    colours = sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))
    return dict(zip(order, colours, strict=True))


def _title(dataset: str, arch: str, T: object, epochs: object) -> str:
    t = "" if pd.isna(T) else f", T={int(T)}"
    e = "" if pd.isna(epochs) else f", {int(epochs)} epochs"
    return f"{dataset_label(dataset)}, L-D {arch}{t}{e}"


def save_figure(fig: plt.Figure, out: Path | Staged, stem: str) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` without timestamps; close the figure.

    Each file is rendered into memory and then written atomically into the folder ``out`` (or
    staged, for a build's `Staged` files), so no reader ever sees a half-written figure.
    """
    paths = []
    for suffix, metadata in _SAVE.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix, dpi=150, metadata=metadata, bbox_inches="tight")
        paths.append(emit(out, f"{stem}.{suffix}", buffer.getvalue()))
    plt.close(fig)
    return paths


def plot_fig2(
    results: Results, out: Path | Staged, errorbar: str = "sd", palette: dict | None = None
) -> list[Path]:
    """Fig. 2: training loss, test loss and test accuracy per epoch, one figure per config.

    Args:
        results: A store read with ``history=True``.
        out: Output folder, or a build's `Staged` files.
        errorbar: ``"sd"`` or ``"ci"`` (see the module docstring).
        palette: Model label → colour; default `model_palette` of the store's finished runs.

    Returns:
        The files written.
    """
    bar = _errorbar(errorbar)
    runs = sort_cells(results.usable, [*CELL_KEYS, "run_id"])
    if runs.empty or results.history.empty:
        return []
    labels = results.labels
    palette = palette or model_palette(runs, labels)
    history = results.history.assign(run_id=results.history["run_id"].astype(str))
    paths = []
    for (dataset, arch, T, epochs), group in _configs(runs):
        rows = group[["run_id"]].assign(model=method_labels(group, labels))
        data = history.merge(rows, on="run_id")
        if data.empty:
            continue
        fig, axes = plt.subplots(1, len(FIG2_PANELS), figsize=(4.2 * len(FIG2_PANELS), 3.4))
        for ax, (column, label) in zip(axes, FIG2_PANELS.items(), strict=True):
            sns.lineplot(
                data=data, x="epoch", y=column, hue="model", hue_order=_model_order(group, labels),
                palette=palette, errorbar=bar, seed=0, ax=ax, legend=ax is axes[-1],
            )  # fmt: skip
            ax.set_ylabel(label)
        if axes[-1].get_legend() is not None:
            sns.move_legend(axes[-1], "center left", bbox_to_anchor=(1.02, 0.5), title=None)
        fig.suptitle(_title(dataset, arch, T, epochs))
        fig.tight_layout()
        paths += save_figure(fig, out, _config_name("fig2", dataset, arch, T, epochs))
    return paths


def plot_precision(
    snaps: pd.DataFrame, out: Path | Staged, x: str = "epoch", errorbar: str = "sd",
    palette: dict | None = None, labels: Mapping[str, str] | None = None,
) -> list[Path]:  # fmt: skip
    """Landing precision, mass at argmax and tie rate (rows) per site (columns) over training.

    Args:
        snaps: The output of `reports.precision.snapshots`.
        out: Output folder, or a build's `Staged` files.
        x: ``"epoch"`` or ``"step"``.
        errorbar: ``"sd"`` or ``"ci"``.
        palette: Model label → colour; default `model_palette` of the snapshots' runs.
        labels: The variant labels the snapshots' ``model`` column was made with
            (`reports.load.Results.labels`).

    Returns:
        The files written.
    """
    if x not in ("epoch", "step"):
        raise ValueError(f"unknown x {x!r}; choices: epoch, step")
    bar = _errorbar(errorbar)
    if snaps.empty:
        return []
    snaps = sort_cells(snaps, [*CELL_KEYS, "site", "run_id", "step", "epoch"])
    palette = palette or model_palette(snaps, labels)
    paths = []
    for (dataset, arch, T, epochs), group in _configs(snaps):
        order = _model_order(group, labels)
        # one value per run and x (snapshots within an epoch averaged), so bands are over seeds
        group = group.groupby(["model", "site", x, "run_id"], sort=True)[list(PROBE_METRICS)]
        group = group.mean().reset_index()
        sites = sorted(group["site"].unique())
        size = (3.6 * len(sites) + 1.5, 2.6 * len(PROBE_METRICS))
        fig, axes = plt.subplots(
            len(PROBE_METRICS), len(sites), figsize=size, squeeze=False, sharex=True
        )
        for col, site in enumerate(sites):
            data = group[group["site"] == site]
            for row, (metric, label) in enumerate(PROBE_METRICS.items()):
                ax = axes[row][col]
                last = row == 0 and col == len(sites) - 1
                sns.lineplot(
                    data=data, x=x, y=metric, hue="model", hue_order=order, palette=palette,
                    errorbar=bar, seed=0, ax=ax, legend=last, marker="o", markersize=3,
                )  # fmt: skip
                ax.set_ylabel(label if col == 0 else "")
                if row == 0:
                    ax.set_title(site)
        if axes[0][-1].get_legend() is not None:
            sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1.0), title=None)
        fig.suptitle(f"Gradient landing: {_title(dataset, arch, T, epochs)}")
        fig.tight_layout()
        paths += save_figure(fig, out, _config_name("precision", dataset, arch, T, epochs))
    return paths


def plot_precision_vs_accuracy(
    probe: pd.DataFrame,
    history: pd.DataFrame,
    hue: str = "model",
    metric: str = "mass_at_argmax",
    accuracy: str = "test_top1",
) -> plt.Figure:
    """Landing precision during training beside accuracy: over epochs, and one against the other.

    Args:
        probe: Probe snapshots with ``epoch``, ``hue`` and ``metric`` (averaged over sites and
            runs per epoch; NaN values, e.g. ``strided_conv``'s, are left out), e.g.
            `reports.precision.snapshots`. With a ``variant`` column, lines follow the tables'
            variant order.
        history: Per-epoch rows with ``epoch`` and ``accuracy``; rows without a ``hue`` column
            take it from ``probe`` through a shared ``run_id``.
        hue: Column naming a line (e.g. the model label).
        metric: Probe metric; ``mass_at_argmax`` equals precision for max pools and is also
            defined for average pools.
        accuracy: History column.

    Returns:
        The figure (not saved: a notebook shows it).

    Example:
        >>> results = load_results("sweeps/quickstart")
        >>> fig = plot_precision_vs_accuracy(snapshots(results), results.history)
    """
    if hue not in history:
        names = probe.drop_duplicates("run_id").set_index("run_id")[hue]
        history = history.assign(**{hue: history["run_id"].astype(str).map(names)})
    prec = probe.groupby([hue, "epoch"], sort=False)[metric].mean().rename(metric)
    acc = history.groupby([hue, "epoch"], sort=False)[accuracy].mean().rename(accuracy)
    both = pd.concat([prec, acc], axis=1).reset_index()
    lines = probe.drop_duplicates(hue)
    if "variant" in lines:
        lines = sort_cells(lines, ["variant"])
    order = list(dict.fromkeys([*lines[hue].dropna(), *history[hue].dropna()]))
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.2), layout="constrained")
    for name, color in zip(order, sns.color_palette(n_colors=len(order)), strict=True):
        rows = both[both[hue] == name].sort_values("epoch")
        axes[0].plot(rows["epoch"], rows[metric], "o-", color=color, label=name)
        axes[1].plot(rows["epoch"], rows[accuracy], "o-", color=color, label=name)
        pairs = rows.dropna(subset=[metric, accuracy])
        axes[2].plot(pairs[metric], pairs[accuracy], "-", color=color, alpha=0.6)
        axes[2].scatter(pairs[metric], pairs[accuracy], color=color,
                        s=[20 + 40 * (e == pairs["epoch"].max()) for e in pairs["epoch"]])  # fmt: skip
    axes[0].set(xlabel="epoch", ylabel=metric.replace("_", " "), ylim=(-0.02, 1.02))
    axes[1].set(xlabel="epoch", ylabel=f"{accuracy} (%)")
    axes[2].set(xlabel=f"{metric.replace('_', ' ')} (mean over sites)",
                ylabel=f"{accuracy} (%)", title="one dot per epoch (last: large)")  # fmt: skip
    for ax in axes[:2]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4,
               fontsize=8)  # fmt: skip
    return fig
