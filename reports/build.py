"""One build: read a store, write every table it can fill, the figures and a coverage summary.

Outputs (all under ``out``; a table that no run falls into is not written but listed in
``coverage.md``):

* ``table1`` … ``table5`` and ``table1_other`` (datasets the paper lacks): ``.csv`` (tidy, one
  row per cell), ``.tex`` (booktabs) and ``.md``; ``tables.tex`` compiles them all
  (with the precision table).
* ``precision.{csv,tex,md}`` and ``precision_curves.csv``: gradient landing per site.
* ``cells.csv`` (every cell's statistics) and ``runs.csv`` (every run, with why it is left out).
* ``fig2_*.{png,pdf}`` and ``precision_*.{png,pdf}``.
* ``coverage.md``: what was read, what is not covered, which runs were not averaged, which
  files were skipped and which cells lost runs through them.

Writing is atomic (`reports.output`): everything is rendered in memory first, then written
under an ``INCOMPLETE`` marker, each file through a temporary file and a rename, and the marker
is removed last. A build stopped at any moment leaves the previous report as it was, or a folder
marked ``INCOMPLETE`` whose files are each complete. A results file that cannot be read stops
the build before anything is written (`reports.screen.BadResultsError`) unless ``skip_bad``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reports.load import CELL_KEYS, RUN_COLUMNS, Results, find_stores, load_results
from reports.output import Staged, check_out
from reports.paper import TableSpec
from reports.precision import (
    precision_caption,
    precision_curves,
    precision_display,
    snapshots,
    summarize_precision,
)
from reports.render import csv_text, write_formats
from reports.screen import BadResultsError
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
    ]
    if results.rejected:
        lines += [
            f"Ignored {len(results.rejected)} documents of runs rejected before training "
            f"(config errors; the harness no longer writes them): {', '.join(results.rejected)}.",
            "",
        ]
    lines += ["## Tables", ""]
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
    if len(usable) < len(runs):
        lines += ["", "## Not averaged", ""]
        left_out = runs[runs["problem"] != ""]
        lines += [
            f"- {r}: {p}" for r, p in zip(left_out["run_id"], left_out["problem"], strict=True)
        ]
    if results.skipped:
        lines += ["", "## Skipped files (unreadable; their runs are missing from the tables)", ""]
        lines += [f"- {skipped}" for skipped in results.skipped]
        lines += ["", "## Cells that lost runs", ""]
        lost: dict[str, list[str]] = {}
        for skipped in results.skipped:
            lost.setdefault(skipped.cell, []).append(skipped.name)
        for cell, names in sorted(lost.items(), key=lambda item: item[0] == ""):
            what = cell or "cell unknown (no readable run of the store differs only in seed)"
            lines.append(f"- {what}: {len(names)} run(s) lost ({', '.join(names)})")
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
    skip_bad: bool = False,
    build: str | None = None,
) -> Report:
    """Read a store and write all tables, figures and the coverage summary.

    Args:
        results_path: A sweep dir (holding ``results/``), the store folder itself, a folder of
            sweep dirs, or several of these (`reports.load.find_stores`).
        out: Output folder (created).
        metric: ``"test_top1"`` (final epoch) or ``"best_test_top1"`` (max over epochs).
        alpha: Significance level of the Welch test against the baseline, in (0, 1).
        errorbar: Figure bands over seeds: ``"sd"`` or ``"ci"`` (95 % bootstrap, seeded).
        probe_x: x axis of the precision curves: ``"epoch"`` or ``"step"``.
        figures: Also draw the figures (the tables do not need the per-epoch history).
        skip_bad: Build without the results files that cannot be read (listed in the coverage
            summary with the cells that lost runs) instead of raising.
        build: What to name this build in the ``INCOMPLETE`` marker (default: this call).

    Returns:
        The files written and the coverage summary.

    Raises:
        FileNotFoundError: If a results path holds no store, or the stores no run document.
        NotADirectoryError: If ``out`` is a file or lies inside one.
        BadResultsError: If a results file cannot be read and ``skip_bad`` is false.
        ValueError: For a ``metric``, ``alpha``, ``errorbar`` or ``probe_x`` not allowed.

    Example:
        >>> report = build_report("sweeps/quickstart", "reports_out")
        >>> print(report.coverage)
    """
    out = check_out(out)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha!r} is not a significance level (expected 0 < alpha < 1)")
    stores = find_stores(results_path)
    results = load_results(stores, metric=metric, history=figures)
    if results.skipped and not skip_bad:
        raise BadResultsError(results.skipped)
    if results.runs.empty and not results.skipped and not results.rejected:
        where = ", ".join(map(str, stores))
        raise FileNotFoundError(f"no run documents in {where} (expected <run id>.json files)")
    cells = summarize_cells(results.runs, alpha)
    tables, not_covered = build_tables(cells, metric, alpha, results.labels)

    staged = Staged(out)
    for table in tables:
        write_formats(
            staged, table.spec.stem, table.tidy, table.display, table.caption,
            table.n_label_columns,
        )  # fmt: skip
    latex = [t.spec.stem for t in tables]

    snaps = snapshots(results)
    precision = summarize_precision(snaps, cells)
    if not precision.empty:
        display, n_labels = precision_display(precision, results.labels)
        write_formats(
            staged, "precision", precision, display, precision_caption(METRIC_WORDS[metric]),
            n_labels, longtable=True,  # a row per cell and site: may run over pages
        )  # fmt: skip
        staged.add("precision_curves.csv", csv_text(precision_curves(snaps, probe_x)))
        latex.append("precision")
    if latex:
        inputs = "\n".join(f"\\input{{{stem}}}" for stem in latex)
        staged.add("tables.tex", _STANDALONE % inputs)

    staged.add("cells.csv", csv_text(cells))
    runs = sort_cells(results.runs, [*CELL_KEYS, "seed", "run_id"])[list(RUN_COLUMNS)]
    staged.add("runs.csv", csv_text(runs))

    if figures:
        from reports.figures import model_palette, plot_fig2, plot_precision

        palette = model_palette(results.usable, results.labels)
        plot_fig2(results, staged, errorbar, palette)
        plot_precision(snaps, staged, probe_x, errorbar, palette, results.labels)

    coverage = coverage_summary(results, tables, not_covered, len(precision))
    staged.add("coverage.md", coverage)
    build = build or f"reports.build.build_report({results_path!r}, {str(out)!r}, ...)"
    files = staged.commit(build)
    return Report(files, tuple(tables), tuple(not_covered), coverage)
