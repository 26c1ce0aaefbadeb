"""The paper's Tables 1-5 rebuilt from our cells, with the paper's numbers side by side.

Each table is a `reports.paper.TableSpec`: which datasets it holds and how the paper labels its
rows. Table 1
names rows by variant ("ConvBN-MaxPool-LIF") and backbone; Tables 2-5 by method ("Spikformer +
CML") and architecture. Every table lists the paper's Spikformer/Spikingformer rows (so that a
missing run shows as "—") and every cell of ours on its datasets, reference or not. Runs on
datasets the paper lacks (e.g. the quickstart's ``digits``) get a Table-1 layout of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.load import CELL_KEYS
from reports.paper import (
    BASELINE,
    OTHER,
    TABLES,
    TableSpec,
    arch_label,
    dataset_label,
    method_labels,
    paper_datasets,
    paper_reference,
    variant_label,
)
from reports.render import (
    MISSING,
    fmt_count,
    fmt_mean_sd,
    fmt_number,
    fmt_signed,
    fmt_significance,
    sparsify,
)
from reports.stats import ALPHA, MIN_SEEDS, sort_cells

METRIC_WORDS = {
    "test_top1": "final-epoch test top-1 accuracy (%)",
    "best_test_top1": "best test top-1 accuracy over epochs (%)",
}

TIDY_COLUMNS = [
    "table", "dataset", "family", "arch", "T", "epochs", "variant", "method", "backbone",
    "n", "mean", "sd", "delta", "p_value", "significant", "paper", "diff_to_paper",
    "n_failed", "n_incomplete", "seeds", "params_m", "metric",
]  # fmt: skip


@dataclass(frozen=True)
class Table:
    """A built table: tidy rows, the display frame and what it leaves uncovered."""

    spec: TableSpec
    tidy: pd.DataFrame
    display: pd.DataFrame
    caption: str
    n_label_columns: int
    missing: tuple[str, ...]  # paper cells without a run of ours


def caption(spec: TableSpec, metric: str, alpha: float = ALPHA) -> str:
    """The caption: the title and the definition of every number in the table."""
    prefix = f"Table {spec.number}" if spec.number else "Table 1 (other datasets)"
    parts = [
        f"{prefix}: {spec.title}.",
        f"ours: mean ± sd over n seeds of the {METRIC_WORDS[metric]}, (+x.xx) its difference to "
        f"the {variant_label(BASELINE)} baseline with the same backbone, T and epochs;",
        f"vs. baseline: two-sided Welch t-test (scipy), yes if p < {alpha:g}, n/a with fewer "
        f"than {MIN_SEEDS} seeds per side or no spread;",
    ]
    if spec.number:
        parts.append("paper: the paper's number; ours - paper: our mean minus it;")
    parts.append(f"n: seeds averaged (failed or unfinished runs are not); {MISSING}: no data.")
    return " ".join(parts)


def _split_arch(arch: pd.Series) -> tuple[pd.Series, pd.Series]:
    parts = arch.str.extract(r"^(\d+)-(\d+)").astype(float)
    return parts[0], parts[1]


def _attach_paper(ours: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Add ``paper`` to our cells and append the paper cells no run of ours matches."""
    on = [k for k in CELL_KEYS if k != "epochs"]
    ours = ours.reset_index(drop=True)
    ref = ref.reset_index(drop=True)
    pairs = ours.reset_index(names="ours_i").merge(
        ref[[*on, "epochs", "paper", "paper_params_m"]].reset_index(names="ref_i"),
        on=on, suffixes=("", "_ref"),
    )  # fmt: skip
    pairs = pairs[pairs["epochs_ref"].isna() | (pairs["epochs_ref"] == pairs["epochs"])]
    pairs = pairs.drop_duplicates("ours_i")
    ours["paper"] = pairs.set_index("ours_i")["paper"].reindex(ours.index)
    ours["paper_params_m"] = pairs.set_index("ours_i")["paper_params_m"].reindex(ours.index)
    unmatched = ref.drop(index=pairs["ref_i"].unique())
    unmatched = unmatched.assign(n=0, n_failed=0, n_incomplete=0, seeds="")
    return pd.concat([ours, unmatched[[c for c in unmatched if c in ours or c == "paper"]]])


def _tidy(
    spec: TableSpec, cells: pd.DataFrame, metric: str, labels: Mapping[str, str] | None
) -> pd.DataFrame:
    datasets = spec.datasets or tuple(sorted(set(cells["dataset"]) - set(paper_datasets())))
    ours = cells[cells["dataset"].isin(datasets)]
    if ours.empty:
        return ours
    if spec.number:
        ref = paper_reference()
        ours = _attach_paper(ours, ref[ref["table"] == spec.number])
    else:
        ours = ours.assign(paper=np.nan, paper_params_m=np.nan)
    ours = ours.assign(
        table=spec.stem,
        method=[variant_label(v, labels) for v in ours["variant"]]
        if spec.by_variant
        else method_labels(ours, labels),
        diff_to_paper=ours["mean"] - ours["paper"],
        metric=metric,
    )
    ours["params_m"] = ours["params_m"].fillna(ours["paper_params_m"])
    ours["backbone"] = [
        arch_label(f, a, None if pd.isna(e) or e == spec.default_epochs else int(e))
        for f, a, e in zip(ours["family"], ours["arch"], ours["epochs"], strict=True)
    ]
    rank = {f: i for i, f in enumerate(spec.family_order)}
    ours["family_rank"] = [(rank.get(f, len(rank)), f) for f in ours["family"]]
    ours["depth"], ours["dim"] = _split_arch(ours["arch"])
    config = ["dim", "depth", "arch", "epochs", "T"]
    order = ["family_rank", *config, "variant"] if spec.by_variant else [
        "family_rank", "variant", *config
    ]  # fmt: skip
    ours = sort_cells(ours, [*order, "dataset"])
    for column in ("n", "n_failed", "n_incomplete"):
        ours[column] = ours[column].astype(int)
    return ours


def _row_keys(spec: TableSpec, tidy: pd.DataFrame) -> list[str]:
    keys = ["family", "arch", "T", "epochs", "variant"]
    if not spec.epochs_in_rows:
        without = [k for k in keys if k != "epochs"]
        if not tidy.duplicated([*without, "dataset"]).any():
            return without
    return keys


def _display(spec: TableSpec, tidy: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    keys = _row_keys(spec, tidy)
    rows = tidy.drop_duplicates(keys)[[*keys, "method", "backbone", "params_m"]]
    rows = rows.reset_index(drop=True)
    if "epochs" not in keys:  # the same row holds runs of other lengths: no epochs in labels
        rows = rows.assign(
            backbone=[arch_label(f, a) for f, a in zip(rows["family"], rows["arch"], strict=True)]
        )
    labels = {
        ("", "Method" if spec.by_variant else "Methods"): sparsify(rows["method"]),
        ("", "Backbone" if spec.by_variant else "Architecture"): rows["backbone"],
    }
    if spec.params:
        labels[("", "Param (M)")] = rows["params_m"].map(fmt_number)
    labels[("", "Time Step")] = rows["T"].map(lambda t: MISSING if pd.isna(t) else str(t))
    display = pd.DataFrame(labels)
    n_labels = display.shape[1]
    by_key = tidy.set_index(keys)
    datasets = spec.datasets or tuple(sorted(tidy["dataset"].unique()))
    for dataset in datasets:
        group = dataset_label(dataset)
        part = by_key[by_key["dataset"] == dataset].reindex(pd.MultiIndex.from_frame(rows[keys]))
        part = part.reset_index(drop=True)
        is_base = (rows["variant"] == BASELINE).to_numpy()
        display[(group, "ours")] = [
            fmt_mean_sd(m, s, d)
            for m, s, d in zip(part["mean"], part["sd"], part["delta"], strict=True)
        ]
        display[(group, "n")] = [
            MISSING if pd.isna(n) else fmt_count(int(n), int(f), int(i))
            for n, f, i in zip(part["n"], part["n_failed"], part["n_incomplete"], strict=True)
        ]
        display[(group, "vs. baseline")] = [
            MISSING if pd.isna(n) or n == 0 else fmt_significance(p, s, b)
            for n, p, s, b in zip(part["n"], part["p_value"], part["significant"], is_base,
                                  strict=True)
        ]  # fmt: skip
        if spec.number:
            display[(group, "paper")] = part["paper"].map(fmt_number)
            display[(group, "ours - paper")] = part["diff_to_paper"].map(fmt_signed)
    display.columns = pd.MultiIndex.from_tuples(display.columns)
    return display.reset_index(drop=True), n_labels


def _missing_cells(tidy: pd.DataFrame) -> tuple[str, ...]:
    """Paper cells without a run of ours, one line per row: ``method, backbone, T: datasets``."""
    gaps = tidy[tidy["paper"].notna() & (tidy["n"] == 0)]
    lines: dict[str, list[str]] = {}
    for d, m, b, t in zip(gaps["dataset"], gaps["method"], gaps["backbone"], gaps["T"],
                          strict=True):  # fmt: skip
        lines.setdefault(f"{m}, {b}, T={t}", []).append(dataset_label(d))
    return tuple(f"{row}: {', '.join(datasets)}" for row, datasets in lines.items())


def build_table(
    spec: TableSpec,
    cells: pd.DataFrame,
    metric: str,
    alpha: float = ALPHA,
    labels: Mapping[str, str] | None = None,
) -> Table | None:
    """Build one table from the cells of `reports.stats.summarize_cells`.

    Args:
        spec: The table's layout.
        cells: Cell statistics.
        metric: The accuracy the cells hold (a key of `METRIC_WORDS`).
        alpha: Significance level stated in the caption.
        labels: Variant labels from the run documents (`reports.load.Results.labels`).

    Returns:
        The table, or ``None`` when no run of ours falls into it (it is then "not covered").
    """
    tidy = _tidy(spec, cells, metric, labels)
    if tidy.empty or not (tidy["n"] + tidy["n_failed"] + tidy["n_incomplete"]).any():
        return None
    display, n_labels = _display(spec, tidy)
    return Table(
        spec=spec,
        tidy=tidy[TIDY_COLUMNS].reset_index(drop=True),
        display=display,
        caption=caption(spec, metric, alpha),
        n_label_columns=n_labels,
        missing=_missing_cells(tidy),
    )


def build_tables(
    cells: pd.DataFrame,
    metric: str,
    alpha: float = ALPHA,
    labels: Mapping[str, str] | None = None,
) -> tuple[list[Table], list[TableSpec]]:
    """All tables the cells can fill (see `build_table`), and the specs of those they cannot.

    Example:
        >>> results = load_results("sweeps/quickstart")
        >>> cells = summarize_cells(results.runs)
        >>> tables, not_covered = build_tables(cells, results.metric, labels=results.labels)
    """
    built, empty = [], []
    for spec in (*TABLES, OTHER):
        table = build_table(spec, cells, metric, alpha, labels)
        if table is None:
            if spec.number:
                empty.append(spec)
        else:
            built.append(table)
    return built, empty
