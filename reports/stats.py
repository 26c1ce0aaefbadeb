"""Seed statistics of each cell: mean ± sd, the delta to the baseline and whether it is noise.

Definitions (they are also stated in every table caption):

* ``mean`` and ``sd``: the sample mean and the sample standard deviation (``ddof=1``) of the
  accuracy over the seeds of a cell; ``sd`` is undefined for one seed.
* ``delta``: ``mean`` minus the mean of the ``lif_maxpool`` cell that differs only in the
  variant (same dataset, family, L-D, T and epochs) — the paper's "(+x.xx)".
* ``p_value``: Welch's unequal-variance two-sided t-test of the variant's seeds against the
  baseline's (`scipy.stats.ttest_ind_from_stats` with ``equal_var=False``), only where both
  sides have at least two seeds; it is undefined when both sides have zero spread.
* ``significant``: ``p_value < alpha`` (default 0.05), with no correction for the number of
  comparisons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from gradprobe.labels import variant_key
from reports.load import CELL_KEYS
from reports.paper import BASELINE

ALPHA = 0.05
MIN_SEEDS = 2  # per side, for the t-test


def variant_order(variants: pd.Series) -> pd.Series:
    """Sort key in display order: the paper's four variants first, in its row order, then any
    other by name (`gradprobe.labels.variant_key`)."""
    return variants.map(variant_key)


def welch_p(
    mean: np.ndarray, sd: np.ndarray, n: np.ndarray, base_mean: np.ndarray, base_sd: np.ndarray,
    base_n: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Two-sided Welch p-values from summary statistics; NaN where a side has fewer than
    `MIN_SEEDS` seeds or both sides have zero spread.

    Example:
        >>> welch_p(np.array([93.0]), np.array([1.0]), np.array([3]),
        ...         np.array([91.0]), np.array([1.0]), np.array([3])).round(4)
        array([0.0705])
    """
    mean, sd, n = (np.asarray(a, dtype=float) for a in (mean, sd, n))
    base_mean, base_sd, base_n = (np.asarray(a, dtype=float) for a in (base_mean, base_sd, base_n))
    ok = (n >= MIN_SEEDS) & (base_n >= MIN_SEEDS) & ((sd > 0) | (base_sd > 0))
    p = np.full(mean.shape, np.nan)
    if ok.any():
        p[ok] = stats.ttest_ind_from_stats(
            mean[ok], sd[ok], n[ok], base_mean[ok], base_sd[ok], base_n[ok], equal_var=False
        ).pvalue
    return p


def summarize_cells(runs: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Aggregate runs into cells (`CELL_KEYS`) with seed statistics against the baseline.

    Args:
        runs: The ``runs`` frame of `reports.load.Results`; runs with a ``problem`` are counted
            (``n_failed``, ``n_incomplete``) but never averaged.
        alpha: Significance level of the Welch test.

    Returns:
        One row per cell, sorted by the cell keys, with ``n, mean, sd, seeds, params_m,
        n_failed, n_incomplete, base_n, base_mean, base_sd, delta, p_value, significant``.
    """
    keys = list(CELL_KEYS)
    usable = runs[runs["problem"] == ""]
    grouped = usable.groupby(keys, dropna=False, sort=False)
    cells = grouped["acc"].agg(n="count", mean="mean", sd="std")
    cells["seeds"] = grouped["seed"].agg(lambda s: ",".join(str(v) for v in sorted(s)))
    cells["params_m"] = grouped["params"].mean() / 1e6

    counts = (
        runs.assign(
            n_failed=runs["status"] == "failed",
            n_incomplete=(runs["problem"] != "") & (runs["status"] != "failed"),
        )
        .groupby(keys, dropna=False, sort=False)[["n_failed", "n_incomplete"]]
        .sum()
    )
    cells = counts.join(cells, how="left").reset_index()
    cells["n"] = cells["n"].fillna(0).astype(int)
    cells["seeds"] = [s if isinstance(s, str) else "" for s in cells["seeds"]]

    context = [k for k in keys if k != "variant"]
    base = cells.loc[cells["variant"] == BASELINE, [*context, "n", "mean", "sd"]]
    base = base.rename(columns={"n": "base_n", "mean": "base_mean", "sd": "base_sd"})
    cells = cells.merge(base, on=context, how="left")
    cells["base_n"] = cells["base_n"].fillna(0).astype(int)
    not_base = (cells["variant"] != BASELINE).to_numpy()
    cells["delta"] = np.where(not_base, cells["mean"] - cells["base_mean"], np.nan)
    p = welch_p(
        cells["mean"], cells["sd"], cells["n"], cells["base_mean"], cells["base_sd"],
        cells["base_n"],
    )  # fmt: skip
    cells["p_value"] = np.where(not_base, p, np.nan)
    cells["significant"] = pd.array(
        [None if np.isnan(v) else bool(v < alpha) for v in cells["p_value"]], dtype="boolean"
    )
    return sort_cells(cells)


def sort_cells(cells: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Sort cells by ``by`` (default: the cell keys), variants in the paper's order."""
    by = by or list(CELL_KEYS)
    return cells.sort_values(
        by, key=lambda col: variant_order(col) if col.name == "variant" else col,
        na_position="last", kind="mergesort",
    ).reset_index(drop=True)  # fmt: skip
