"""One build: read a store, write every table it can fill, the figures and a coverage summary.

Outputs (all under ``out``; a table that no run falls into is not written but listed in
``coverage.md``):

* ``table1`` … ``table5`` and ``table1_other`` (datasets the paper lacks): ``.csv`` (tidy, one
  row per cell), ``.tex`` (booktabs) and ``.md``; ``tables.tex`` compiles them all
  (with the precision table).
* ``precision.{csv,tex,md}`` and ``precision_curves.csv``: gradient landing per site.
* ``cells.csv`` (every cell's statistics) and ``runs.csv`` (every run, with why it is left out).
* ``fig2_*.{png,pdf}`` and ``precision_*.{png,pdf}``.
* ``coverage.md``: what was read, what is not covered, which runs were not averaged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.load import CELL_KEYS, RUN_COLUMNS, Results, load_results
from reports.paper import TableSpec
from reports.precision import (
    precision_caption,
    precision_curves,
    precision_display,
    snapshots,
    summarize_precision,
)
from reports.render import CSV_FLOAT, write_formats
from reports.stats import ALPHA, sort_cells, summarize_cells
from reports.tables import METRIC_WORDS, Table, build_tables

_STANDALONE = r"""\documentclass{article}
\usepackage[a3paper,landscape,margin=1cm]{geometry}
\usepackage{booktabs}
\usepackage{longtable}
\begin{document}
\scriptsize
%s
\end{document}
"""


@dataclass(frozen=True)
class Report:
    """What a build wrote and what it could not cover."""

    files: tuple[Path, ...]
    tables: tuple[Table, ...]
    not_covered: tuple[TableSpec, ...]
    coverage: str


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False, float_format=CSV_FLOAT, lineterminator="\n")
    return path


def coverage_summary(
    results: Results, tables: list[Table], not_covered: list[TableSpec], precision_rows: int
) -> str:
    """The Markdown coverage summary: runs read, tables filled or not, runs not averaged."""
    runs = results.runs
    usable = results.usable
    failed = runs[runs["status"] == "failed"]
    other = runs[(runs["problem"] != "") & (runs["status"] != "failed")]
    lines = [
        "# Coverage",
        "",
        f"Read {len(runs)} run documents ({len(results.skipped)} files skipped): "
        f"{len(usable)} finished and averaged, {len(failed)} failed, {len(other)} unfinished "
        f"or duplicate. Accuracy: {METRIC_WORDS[results.metric]}.",
        "",
        "## Tables",
        "",
    ]
    for table in tables:
        tidy = table.tidy
        ours = int((tidy["n"] > 0).sum())
        line = f"- {table.spec.stem}: {ours} cells with runs"
        if table.spec.number:
            paper = int(tidy["paper"].notna().sum())
            covered = int((tidy["paper"].notna() & (tidy["n"] > 0)).sum())
            line += f", {covered} of the paper's {paper} cells covered"
        lines.append(line + ("; not covered:" if table.missing else ""))
        lines += [f"  - {cell}" for cell in table.missing]
    for spec in not_covered:
        lines.append(f"- {spec.stem} (paper Table {spec.number}): not covered, no runs")
    if not precision_rows:
        lines.append("- precision: not covered, no probe rows in finished runs")
    if results.skipped or len(usable) < len(runs):
        lines += ["", "## Not averaged", ""]
        left_out = runs[runs["problem"] != ""]
        lines += [
            f"- {r}: {p}" for r, p in zip(left_out["run_id"], left_out["problem"], strict=True)
        ]
        lines += [f"- {message}" for message in results.skipped]
    return "\n".join(lines) + "\n"


def build_report(
    results_path: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    metric: str = "test_top1",
    alpha: float = ALPHA,
    errorbar: str = "sd",
    probe_x: str = "epoch",
    figures: bool = True,
) -> Report:
    """Read a store and write all tables, figures and the coverage summary.

    Args:
        results_path: A sweep dir (holding ``results/``), the store folder itself, a folder of
            sweep dirs, or several of these (`reports.load.find_stores`).
        out: Output folder (created).
        metric: ``"test_top1"`` (final epoch) or ``"best_test_top1"`` (max over epochs).
        alpha: Significance level of the Welch test against the baseline.
        errorbar: Figure bands over seeds: ``"sd"`` or ``"ci"`` (95 % bootstrap, seeded).
        probe_x: x axis of the precision curves: ``"epoch"`` or ``"step"``.
        figures: Also draw the figures (the tables do not need the per-epoch history).

    Returns:
        The files written and the coverage summary.

    Example:
        >>> report = build_report("sweeps/quickstart", "reports_out")
        >>> print(report.coverage)
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(results_path, metric=metric, history=figures)
    cells = summarize_cells(results.runs, alpha)
    tables, not_covered = build_tables(cells, metric, alpha, results.labels)

    files: list[Path] = []
    for table in tables:
        files += write_formats(
            out, table.spec.stem, table.tidy, table.display, table.caption, table.n_label_columns
        )
    latex = [t.spec.stem for t in tables]

    snaps = snapshots(results)
    precision = summarize_precision(snaps, cells)
    if not precision.empty:
        display, n_labels = precision_display(precision, results.labels)
        files += write_formats(
            out, "precision", precision, display, precision_caption(METRIC_WORDS[metric]),
            n_labels, longtable=True,  # a row per cell and site: may run over pages
        )  # fmt: skip
        files.append(_write_csv(precision_curves(snaps, probe_x), out / "precision_curves.csv"))
        latex.append("precision")
    if latex:
        inputs = "\n".join(f"\\input{{{stem}}}" for stem in latex)
        (out / "tables.tex").write_text(_STANDALONE % inputs)
        files.append(out / "tables.tex")

    files.append(_write_csv(cells, out / "cells.csv"))
    runs = sort_cells(results.runs, [*CELL_KEYS, "seed", "run_id"])[list(RUN_COLUMNS)]
    files.append(_write_csv(runs, out / "runs.csv"))

    if figures:
        from reports.figures import model_palette, plot_fig2, plot_precision

        palette = model_palette(results.usable, results.labels)
        files += plot_fig2(results, out, errorbar, palette)
        files += plot_precision(snaps, out, probe_x, errorbar, palette, results.labels)

    coverage = coverage_summary(results, tables, not_covered, len(precision))
    (out / "coverage.md").write_text(coverage)
    files.append(out / "coverage.md")
    return Report(tuple(files), tuple(tables), tuple(not_covered), coverage)
