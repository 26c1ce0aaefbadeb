"""Cell formatting and the three output formats of a table: tidy CSV, booktabs LaTeX, Markdown.

A *display* frame holds strings only, with two-level column labels (group, column); the label
columns of a table sit under the empty group. Markdown and LaTeX are both rendered from it, so
the two never disagree; only the LaTeX escaping differs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
from pandas.io.formats.style import Styler

from reports.output import Staged, emit

MISSING = "—"
CSV_FLOAT = "%.6g"

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "—": "---",
    "–": "--",
    "−": "-",
    "Δ": r"$\Delta$",
}


def _missing(x: object) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def fmt_number(x: object, decimals: int = 2) -> str:
    """``x`` with fixed decimals, or the missing-cell dash."""
    return MISSING if _missing(x) else f"{float(x):.{decimals}f}"


def fmt_signed(x: object, decimals: int = 2) -> str:
    """``x`` with an explicit sign (``+0.12``), or the missing-cell dash."""
    return MISSING if _missing(x) else f"{float(x):+.{decimals}f}"


def fmt_mean_sd(mean: object, sd: object, delta: object = None, decimals: int = 2) -> str:
    """``95.62 ± 0.11 (+0.45)``: mean ± sd over seeds, then the delta in the paper's style.

    The sd is left out for a single seed, the delta for the baseline itself.
    """
    if _missing(mean):
        return MISSING
    text = fmt_number(mean, decimals)
    if not _missing(sd):
        text += f" ± {float(sd):.{decimals}f}"
    if not _missing(delta):
        text += f" ({float(delta):+.{decimals}f})"
    return text


def fmt_significance(p: object, significant: object, is_baseline: bool) -> str:
    """``yes (p=0.012)``, ``no (p=0.41)``, ``baseline`` or ``n/a`` (too few seeds)."""
    if is_baseline:
        return "baseline"
    if _missing(p):
        return "n/a"
    shown = "p<0.001" if float(p) < 0.001 else f"p={float(p):.3f}"
    return f"{'yes' if significant else 'no'} ({shown})"


def fmt_count(n: int, failed: int = 0, incomplete: int = 0) -> str:
    """Seeds averaged, with runs left out: ``2 (1 failed)``."""
    extra = []
    if failed:
        extra.append(f"{failed} failed")
    if incomplete:
        extra.append(f"{incomplete} not finished")
    return f"{n} ({', '.join(extra)})" if extra else str(n)


def latex_escape(text: str) -> str:
    """Escape text for LaTeX's text mode; ``±`` becomes ``$\\pm$``, ``—`` becomes ``---``."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def sparsify(labels: pd.Series) -> pd.Series:
    """Blank a label that repeats the one above it, as the paper prints its row groups."""
    repeated = labels.eq(labels.shift())
    return labels.where(~repeated, "")


def to_markdown(display: pd.DataFrame, caption: str) -> str:
    """A pipe table (through ``tabulate``) under its caption."""
    flat = display.copy()
    flat.columns = [f"{group} {name}".strip() for group, name in display.columns]
    table = flat.to_markdown(index=False, disable_numparse=True, stralign="left")
    return f"{caption}\n\n{table}\n"


def to_latex(
    display: pd.DataFrame, caption: str, label: str, n_label_columns: int, longtable: bool = False
) -> str:
    """A booktabs table through pandas' Styler; needs ``\\usepackage{booktabs}`` (and
    ``longtable`` for a ``longtable``, which breaks across pages)."""
    escaped = display.map(latex_escape)
    escaped.columns = pd.MultiIndex.from_tuples(
        [(latex_escape(g), latex_escape(n)) for g, n in display.columns]
    )
    n_data = display.shape[1] - n_label_columns
    styler = Styler(escaped).hide(axis="index")
    latex = styler.to_latex(
        column_format="l" * n_label_columns + "r" * n_data,
        position=None if longtable else "htbp",
        position_float=None if longtable else "centering",
        environment="longtable" if longtable else None,
        hrules=True,
        label=label,
        caption=latex_escape(caption),
        multicol_align="c",
    )
    # Rule each column group off under its header line, as booktabs tables do.
    spans = _group_spans(display.columns)
    if not spans:
        return latex
    rules = " ".join(rf"\cmidrule(lr){{{first}-{last}}}" for first, last in spans)
    return re.sub(r"(\\toprule\n[^\n]*\n)", lambda m: f"{m[1]}{rules}\n", latex)


def _group_spans(columns: pd.MultiIndex) -> list[tuple[int, int]]:
    """1-based first and last column of each named column group."""
    spans: list[tuple[int, int]] = []
    for i, (group, _) in enumerate(columns, start=1):
        if not group:
            continue
        if spans and columns[spans[-1][0] - 1][0] == group and spans[-1][1] == i - 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    return spans


def csv_text(frame: pd.DataFrame) -> str:
    """A frame as the reports' CSV: no index, `CSV_FLOAT` numbers, ``\\n`` line ends."""
    return frame.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n")


def write_formats(
    out: Path | Staged, stem: str, tidy: pd.DataFrame, display: pd.DataFrame | None,
    caption: str, n_label_columns: int = 0, longtable: bool = False,
) -> list[Path]:  # fmt: skip
    """Write ``<stem>.csv`` (tidy) and, given a display frame, ``<stem>.tex`` and ``<stem>.md``.

    ``out`` is a folder (each file is written atomically at once) or a build's `Staged` files.
    """
    paths = [emit(out, f"{stem}.csv", csv_text(tidy))]
    if display is not None:
        latex = to_latex(display, caption, f"tab:{stem}", n_label_columns, longtable)
        paths.append(emit(out, f"{stem}.tex", latex))
        paths.append(emit(out, f"{stem}.md", to_markdown(display, caption)))
    return paths
