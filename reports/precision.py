"""The mechanism next to the outcome: gradient-landing precision and tie rate per site.

Probe rows (`gradprobe.probe` defines the metrics) carry one value per run, snapshot (epoch,
step), site and time step ``t``. A snapshot of a site is first reduced over ``t``, weighting
each row by its ``windows`` (the pooling windows that routed a gradient, the metrics'
denominator) and leaving out undefined (NaN) values: precision is undefined for
``avgpool_lif`` (read ``mass_at_argmax``) and every metric for ``strided_conv``, which has no
pooling window. Each run so contributes one curve per site and metric. The table
reports each curve's first and last snapshot, mean ± sd over seeds, beside the cell's accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from reports.load import CELL_KEYS, Results
from reports.paper import arch_label, dataset_label, method_labels
from reports.render import fmt_mean_sd
from reports.stats import sort_cells

SNAPSHOT_KEYS = ("run_id", "epoch", "step", "site")
PROBE_METRICS = {
    "precision": "landing precision",
    "mass_at_argmax": "mass at argmax",
    "tie_rate": "tie rate",
}


def snapshots(results: Results) -> pd.DataFrame:
    """One row per usable run, snapshot and site, reduced over time steps and joined to the
    run's cell keys, seed and ``model`` label (family × variant)."""
    probe = results.probe
    cols = [*SNAPSHOT_KEYS, *PROBE_METRICS, "windows", *CELL_KEYS, "seed", "model"]
    if probe.empty:
        return pd.DataFrame(columns=cols)
    weights = probe["windows"].fillna(0).to_numpy(dtype=float)
    frame = probe[list(SNAPSHOT_KEYS)].assign(windows=weights)
    for name in PROBE_METRICS:
        values = probe[name].to_numpy(dtype=float)
        known = ~np.isnan(values)
        frame[name] = np.where(known, values, 0.0) * weights
        frame[f"{name}_w"] = known * weights
    frame = frame.groupby(list(SNAPSHOT_KEYS), observed=True, sort=True).sum().reset_index()
    for name in PROBE_METRICS:
        total = frame.pop(f"{name}_w").to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            frame[name] = np.where(total > 0, frame[name].to_numpy() / total, np.nan)
    runs = results.usable[["run_id", *CELL_KEYS, "seed"]]
    runs = runs.assign(model=method_labels(runs, results.labels))
    frame["run_id"] = frame["run_id"].astype(str)
    return frame.merge(runs, on="run_id", how="inner")[cols]


def summarize_precision(snaps: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell and site: first and last snapshot of each run, mean and sd over seeds.

    Args:
        snaps: The output of `snapshots`.
        cells: The output of `reports.stats.summarize_cells`, for the accuracy beside it.

    Returns:
        Tidy rows with ``<metric>_<first|last>_<mean|sd>``, ``n``, ``epoch_first``,
        ``epoch_last`` and the cell's ``acc_n, acc_mean, acc_sd``.
    """
    keys = [*CELL_KEYS, "site"]
    if snaps.empty:
        return pd.DataFrame(columns=keys)
    ordered = snaps.sort_values(["run_id", "site", "step", "epoch"], kind="mergesort")
    per_run = ordered.groupby(["run_id", "site"], sort=False)
    first, last = per_run.head(1), per_run.tail(1)
    merged = first.merge(
        last[["run_id", "site", "epoch", *PROBE_METRICS]], on=["run_id", "site"],
        suffixes=("_first", "_last"),
    )  # fmt: skip
    grouped = merged.groupby(keys, dropna=False, sort=False)
    stats = {"n": grouped["run_id"].count()}
    for name in PROBE_METRICS:
        for when in ("first", "last"):
            stats[f"{name}_{when}_mean"] = grouped[f"{name}_{when}"].mean()
            stats[f"{name}_{when}_sd"] = grouped[f"{name}_{when}"].std()
    stats["epoch_first"] = grouped["epoch_first"].min()
    stats["epoch_last"] = grouped["epoch_last"].max()
    table = pd.DataFrame(stats).reset_index()
    acc = cells[[*CELL_KEYS, "n", "mean", "sd"]].rename(
        columns={"n": "acc_n", "mean": "acc_mean", "sd": "acc_sd"}
    )
    table = table.merge(acc, on=list(CELL_KEYS), how="left")
    return sort_cells(table, keys)


def precision_curves(snaps: pd.DataFrame, x: str = "epoch") -> pd.DataFrame:
    """Mean, sd and n over seeds of each probe metric per cell, site and ``x``."""
    keys = [*CELL_KEYS, "site", x]
    if snaps.empty:
        return pd.DataFrame(columns=keys)
    per_run = snaps.groupby([*keys, "run_id"], dropna=False, sort=False)[list(PROBE_METRICS)]
    grouped = per_run.mean().groupby(keys, dropna=False, sort=False)
    curves = grouped.agg(["mean", "std", "count"])
    curves.columns = [f"{m}_{s.replace('std', 'sd').replace('count', 'n')}" for m, s in curves]
    return sort_cells(curves.reset_index(), keys)


def precision_display(
    table: pd.DataFrame, labels: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, int]:
    """The precision table for Markdown and LaTeX: label columns then mean ± sd columns.

    Args:
        table: The output of `summarize_precision`.
        labels: Variant labels from the run documents (`reports.load.Results.labels`).
    """
    display = pd.DataFrame(
        {
            ("", "Dataset"): table["dataset"].map(dataset_label),
            ("", "Backbone"): [
                arch_label(f, a, None if pd.isna(e) else int(e))
                for f, a, e in zip(table["family"], table["arch"], table["epochs"], strict=True)
            ],
            ("", "Time Step"): table["T"].astype(str),
            ("", "Method"): method_labels(table, labels),
            ("", "Site"): table["site"],
        }
    )
    n_labels = display.shape[1]
    display[("", "n")] = table["n"].astype(str)
    display[("", "epochs probed")] = [
        f"{int(a)}-{int(b)}" for a, b in zip(table["epoch_first"], table["epoch_last"], strict=True)
    ]
    for name, label in PROBE_METRICS.items():
        for when in ("first", "last"):
            display[(label, when)] = [
                fmt_mean_sd(m, s, decimals=3)
                for m, s in zip(table[f"{name}_{when}_mean"], table[f"{name}_{when}_sd"],
                                strict=True)
            ]  # fmt: skip
    display[("top-1 (%)", "ours")] = [
        fmt_mean_sd(m, s) for m, s in zip(table["acc_mean"], table["acc_sd"], strict=True)
    ]
    display.columns = pd.MultiIndex.from_tuples(display.columns)
    return display.reset_index(drop=True), n_labels


def precision_caption(metric_words: str) -> str:
    """Caption of the gradient-precision table."""
    return (
        "Gradient-landing precision, gradient mass at the argmax of x and tie rate per "
        "downsampling site, reduced over time steps weighted by the windows that routed a "
        "gradient, at each run's first and last probe snapshot, mean ± sd "
        f"over seeds; top-1: the cell's {metric_words}, mean ± sd over seeds."
    )
