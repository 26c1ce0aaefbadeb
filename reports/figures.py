"""Fig. 2 (loss and accuracy per epoch) and the gradient-precision curves, as PNG and PDF.

One figure per configuration (dataset, L-D, T, epochs), with a line per model (family ×
variant) and a band over seeds from seaborn's ``lineplot``: ``errorbar="sd"`` (mean ± one sample
sd, the default) or ``"ci"`` (95 % bootstrap interval of the mean, seeded so that reruns are
identical). Files carry no creation date or software stamp, so the same inputs give the same
bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from reports.load import CELL_KEYS, Results
from reports.paper import dataset_label, method_label
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


def _model_order(runs: pd.DataFrame) -> list[str]:
    ordered = sort_cells(runs.drop_duplicates(["family", "variant"]), ["family", "variant"])
    return [method_label(f, v) for f, v in zip(ordered["family"], ordered["variant"], strict=True)]


def model_palette(runs: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """One colour per model (family × variant) of a store, the same in every figure."""
    order = _model_order(runs)
    colours = sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))
    return dict(zip(order, colours, strict=True))


def _title(dataset: str, arch: str, T: object, epochs: object) -> str:
    t = "" if pd.isna(T) else f", T={int(T)}"
    e = "" if pd.isna(epochs) else f", {int(epochs)} epochs"
    return f"{dataset_label(dataset)}, L-D {arch}{t}{e}"


def save_figure(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` without timestamps; close the figure."""
    paths = []
    for suffix, metadata in _SAVE.items():
        path = out / f"{stem}.{suffix}"
        fig.savefig(path, dpi=150, metadata=metadata, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def plot_fig2(
    results: Results, out: Path, errorbar: str = "sd", palette: dict | None = None
) -> list[Path]:
    """Fig. 2: training loss, test loss and test accuracy per epoch, one figure per config.

    Args:
        results: A store read with ``history=True``.
        out: Output folder.
        errorbar: ``"sd"`` or ``"ci"`` (see the module docstring).
        palette: Model label → colour; default `model_palette` of the store's finished runs.

    Returns:
        The files written.
    """
    bar = _errorbar(errorbar)
    runs = sort_cells(results.usable, [*CELL_KEYS, "run_id"])
    if runs.empty or results.history.empty:
        return []
    palette = palette or model_palette(runs)
    history = results.history.assign(run_id=results.history["run_id"].astype(str))
    paths = []
    for (dataset, arch, T, epochs), group in _configs(runs):
        rows = group[["run_id", "family", "variant"]].assign(
            model=[method_label(f, v) for f, v in zip(group["family"], group["variant"],
                                                       strict=True)]
        )  # fmt: skip
        data = history.merge(rows[["run_id", "model"]], on="run_id")
        if data.empty:
            continue
        fig, axes = plt.subplots(1, len(FIG2_PANELS), figsize=(4.2 * len(FIG2_PANELS), 3.4))
        for ax, (column, label) in zip(axes, FIG2_PANELS.items(), strict=True):
            sns.lineplot(
                data=data, x="epoch", y=column, hue="model", hue_order=_model_order(group),
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
    snaps: pd.DataFrame, out: Path, x: str = "epoch", errorbar: str = "sd",
    palette: dict | None = None,
) -> list[Path]:  # fmt: skip
    """Landing precision, mass at argmax and tie rate (rows) per site (columns) over training.

    Args:
        snaps: The output of `reports.precision.snapshots`.
        out: Output folder.
        x: ``"epoch"`` or ``"step"``.
        errorbar: ``"sd"`` or ``"ci"``.
        palette: Model label → colour; default `model_palette` of the snapshots' runs.

    Returns:
        The files written.
    """
    if x not in ("epoch", "step"):
        raise ValueError(f"unknown x {x!r}; choices: epoch, step")
    bar = _errorbar(errorbar)
    if snaps.empty:
        return []
    snaps = sort_cells(snaps, [*CELL_KEYS, "site", "run_id", "step", "epoch"])
    palette = palette or model_palette(snaps)
    paths = []
    for (dataset, arch, T, epochs), group in _configs(snaps):
        order = _model_order(group)
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
