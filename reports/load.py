"""Read a results store into three tidy frames: runs, per-epoch history and probe rows.

Reading is one pass of ``json`` over the store (through `ablations.store.iter_runs`) and one
DataFrame construction per frame; no per-row pandas work. Only runs that finished contribute
history and probe rows: failed or incomplete runs are listed, never averaged. Unreadable files
and the documents of configs rejected before training are kept out of the frames
(`reports.screen`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from ablations.store import RESULTS_DIRNAME, iter_runs, store_dir
from reports.paper import parse_model
from reports.screen import SkippedFile, is_rejected, shape_problem, unreadable, with_cells

METRICS = ("test_top1", "best_test_top1")
HISTORY_COLUMNS = ("epoch", "train_loss", "test_loss", "test_top1")
PROBE_COLUMNS = (
    "epoch", "step", "site", "t", "precision", "mass_at_argmax", "tie_rate", "windows",
)  # fmt: skip
RUN_COLUMNS = (
    "run_id", "status", "problem", "error", "experiment", "model", "family", "arch", "depth",
    "dim", "variant", "dataset", "seed", "T", "loss", "epochs", "epochs_done", "params", "acc",
)  # fmt: skip
# A cell of a table: everything that defines a condition except the seed.
CELL_KEYS = ("dataset", "family", "arch", "T", "epochs", "variant")
_TEXT_FIELDS = ("site",)
_INT_FIELDS = ("epoch", "step", "t", "windows")
_INT_COLUMNS = ("depth", "dim", "seed", "T", "epochs", "epochs_done", "params")


@dataclass(frozen=True)
class Results:
    """What a store holds, as frames sorted by run id.

    Attributes:
        runs: One row per readable run document (`RUN_COLUMNS`). ``acc`` is the chosen accuracy
            metric; ``problem`` is empty for a usable run and says why a run is not averaged
            otherwise.
        history: Per-epoch rows (``run_id`` + `HISTORY_COLUMNS`) of the usable runs.
        probe: Probe rows (``run_id`` + `PROBE_COLUMNS`) of the usable runs.
        skipped: The results files that could not be read (`reports.screen.SkippedFile`).
        metric: The accuracy used: ``"test_top1"`` (final epoch) or ``"best_test_top1"``.
        labels: Variant → the display label its run documents carry (``downsample_label``;
            the first document read wins), for variants `gradprobe.labels` may not know.
        rejected: Run ids of the ignored documents of configs rejected before training.
    """

    runs: pd.DataFrame
    history: pd.DataFrame
    probe: pd.DataFrame
    skipped: tuple[SkippedFile, ...]
    metric: str
    labels: dict[str, str] = field(default_factory=dict)
    rejected: tuple[str, ...] = ()

    @property
    def usable(self) -> pd.DataFrame:
        """The runs that are averaged: finished, with a finite accuracy."""
        return self.runs[self.runs["problem"] == ""]


def _accuracy(doc: dict, metric: str) -> float:
    final = doc.get("final") or {}
    value = final.get(metric)
    if value is None:  # fall back on the history when a run has no final block
        accs = [row["test_top1"] for row in doc["history"] if row.get("test_top1") is not None]
        if accs:
            value = max(accs) if metric == "best_test_top1" else accs[-1]
    return math.nan if value is None else float(value)


def _problem(doc: dict, acc: float, epochs_done: int) -> str:
    status = doc["status"]
    if status == "failed":
        return f"failed: {doc.get('error') or 'no error recorded'}"
    if status != "finished":
        planned = doc.get("epochs_planned")
        of = f" of {planned}" if planned is not None else ""
        return f"incomplete ({status}, {epochs_done}{of} epochs)"
    if not math.isfinite(acc):
        return "finished without a test accuracy"
    return ""


def _run_record(doc: dict, metric: str) -> dict:
    final = doc.get("final") or {}
    epochs_done = final.get("epochs_done", len(doc["history"]))
    acc = _accuracy(doc, metric)
    family, arch, depth, dim = parse_model(doc["model"], doc.get("family"))
    return {
        "run_id": doc["run_id"],
        "status": doc["status"],
        "problem": _problem(doc, acc, epochs_done),
        "error": doc.get("error") or "",
        "experiment": doc.get("experiment") or "",
        "model": doc["model"],
        "family": family,
        "arch": arch,
        "depth": depth,
        "dim": dim,
        "variant": doc["downsample"],
        "dataset": doc["dataset"],
        "seed": doc["seed"],
        "T": doc.get("T"),
        "loss": doc.get("loss") or "",
        "epochs": doc.get("epochs_planned"),
        "epochs_done": epochs_done,
        "params": doc.get("params"),
        "acc": acc,
    }


def _checked_record(doc: dict, metric: str) -> tuple[dict | None, str]:
    """The run's record, or ``None`` and why the document cannot be used."""
    problem = shape_problem(doc)
    if problem:
        return None, problem
    try:
        return _run_record(doc, metric), ""
    except (KeyError, TypeError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}"


def _mark_duplicates(runs: pd.DataFrame) -> bool:
    """Keep the first run (by run id) of a cell and seed; a second one, e.g. from another
    experiment with other overrides, is listed instead of being averaged as if it were a seed."""
    usable = runs[runs["problem"] == ""]
    keys = [*CELL_KEYS, "seed"]
    dup = usable.duplicated(keys, keep=False)
    if not dup.any():
        return False
    for _, group in usable[dup].groupby(keys, dropna=False, sort=False):
        first, *others = group["run_id"]
        runs.loc[runs["run_id"].isin(others), "problem"] = f"duplicate seed of {first}"
    return True


def _numeric_columns(rows: list[dict], fields: list[str]) -> dict[str, np.ndarray]:
    try:  # fast path: one pass of C-level getters into a structured array
        dtype = np.dtype([(f, float) for f in fields])
        values = np.fromiter(map(itemgetter(*fields), rows), dtype=dtype, count=len(rows))
        return {f: values[f] for f in fields}
    except (KeyError, TypeError, ValueError):  # a row lacks a field or holds null or text
        return {
            f: pd.to_numeric(
                pd.Series([r.get(f) for r in rows], dtype=object), errors="coerce"
            ).to_numpy(dtype=float)
            for f in fields
        }


def _rows_frame(
    rows: list[dict], owners: list[str], counts: list[int], columns: tuple[str, ...]
) -> pd.DataFrame:
    """One frame from the rows of all runs, without per-row pandas work."""
    numeric = _numeric_columns(rows, [c for c in columns if c not in _TEXT_FIELDS])
    codes = np.repeat(np.arange(len(owners)), counts)
    if len(set(owners)) == len(owners):
        run_id = pd.Categorical.from_codes(codes, categories=owners)
    else:  # two documents claim one run id: factorize the ids themselves
        run_id = pd.Categorical(np.array(owners, dtype=object)[codes])
    data: dict[str, object] = {"run_id": run_id}
    for column in columns:
        if column in _TEXT_FIELDS:
            try:
                data[column] = list(map(itemgetter(column), rows))
            except KeyError:
                data[column] = [r.get(column) for r in rows]
            continue
        col = numeric[column]
        integral = column in _INT_FIELDS and not np.isnan(col).any()
        data[column] = col.astype(np.int64) if integral else col
    return pd.DataFrame(data)


_EXPECTED = "expected a sweep dir holding results/, a results/ store or a folder of sweep dirs"


def find_stores(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The results stores to read: each root is a store, a sweep dir holding one, or a folder
    of sweep dirs (``sweeps/``: every ``*/results`` under it, sorted).

    Raises:
        FileNotFoundError: Naming the first root that is missing, not a folder or holds no
            store.
    """
    roots = [roots] if isinstance(roots, str | os.PathLike) else list(roots)
    if not roots:
        raise FileNotFoundError(f"no results store given ({_EXPECTED})")
    found: list[Path] = []
    for root in roots:
        shown = repr(str(root))
        if not str(root):
            raise FileNotFoundError(f"no results store at '': an empty path ({_EXPECTED})")
        if not Path(root).exists():
            raise FileNotFoundError(f"no results store at {shown}: no such folder ({_EXPECTED})")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"no results store at {shown}: a file ({_EXPECTED})")
        store = store_dir(root)
        if store.is_dir():
            found.append(store)
            continue
        inner = sorted(p for p in Path(root).glob(f"*/{RESULTS_DIRNAME}") if p.is_dir())
        if not inner:
            raise FileNotFoundError(f"no results store in {shown} ({_EXPECTED})")
        found += inner
    return found


def _store_labels(stores: list[Path]) -> list[str]:
    """Prefixes that keep run ids apart across stores (sweeps reuse ids like
    ``downsample=lif_maxpool``): none for one store, else the sweep folder's name."""
    if len(stores) == 1:
        return [""]
    names = [store.parent.name for store in stores]
    return [
        f"{name}/" if names.count(name) == 1 else f"{name}.{i}/" for i, name in enumerate(names)
    ]


def load_results(
    roots: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    metric: str = "test_top1",
    history: bool = True,
) -> Results:
    """Read every run document of one or more stores.

    Args:
        roots: A store, a sweep dir holding ``results/``, a folder of sweep dirs, or several of
            these (see `find_stores`). Across several stores run ids are prefixed with the sweep
            folder's name.
        metric: The accuracy to report, one of `METRICS`.
        history: Also collect the per-epoch history (needed by the figures, not by the tables).

    Returns:
        The runs as `Results`. A corrupt, partial or malformed file is skipped with a
        ``UserWarning`` naming it, and listed in ``skipped``; the documents of configs rejected
        before training are left out and listed in ``rejected`` (see `reports.screen`).

    Example:
        >>> results = load_results("sweeps/quickstart", metric="best_test_top1")
        >>> results.usable.groupby("variant")["acc"].mean()
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choices: {', '.join(METRICS)}")
    stores = find_stores(roots)
    records: list[dict] = []
    hist_rows: list[dict] = []
    probe_rows: list[dict] = []
    owners: list[str] = []
    hist_counts: list[int] = []
    probe_counts: list[int] = []
    skipped: list[SkippedFile] = []
    rejected: list[str] = []
    variant_labels: dict[str, str] = {}
    for store, label in zip(stores, _store_labels(stores), strict=True):
        store_records: list[dict] = []
        bad: list[SkippedFile] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for doc in iter_runs(store):
                if is_rejected(doc):
                    rejected.append(label + doc["run_id"])
                    continue
                record, problem = _checked_record(doc, metric)
                if problem:
                    path = store / f"{doc['run_id']}.json"
                    warnings.warn(f"skipping results file {path}: {problem}", stacklevel=2)
                    continue
                record["run_id"] = label + record["run_id"]
                store_records.append(record)
                if doc.get("downsample_label"):
                    variant_labels.setdefault(doc["downsample"], doc["downsample_label"])
                if record["problem"]:
                    continue
                owners.append(record["run_id"])
                if history:
                    hist_rows.extend(doc["history"])
                    hist_counts.append(len(doc["history"]))
                probes = doc.get("probe") or []
                probe_rows.extend(probes)
                probe_counts.append(len(probes))
        for item in caught:
            warnings.warn(item.message, item.category, stacklevel=2)
            if found := unreadable(str(item.message), store, label):
                bad.append(found)
        skipped += with_cells(sorted(bad, key=lambda s: s.name), store_records, label)
        records += store_records

    runs = pd.DataFrame(records, columns=list(RUN_COLUMNS))
    for column in _INT_COLUMNS:
        runs[column] = runs[column].astype("Int64")
    runs["acc"] = runs["acc"].astype(float)
    history_frame = _rows_frame(hist_rows, owners if history else [], hist_counts, HISTORY_COLUMNS)
    probe_frame = _rows_frame(probe_rows, owners, probe_counts, PROBE_COLUMNS)
    if _mark_duplicates(runs):
        kept = runs.loc[runs["problem"] == "", "run_id"]
        history_frame = history_frame[history_frame["run_id"].isin(kept)].reset_index(drop=True)
        probe_frame = probe_frame[probe_frame["run_id"].isin(kept)].reset_index(drop=True)
    return Results(
        runs=runs,
        history=history_frame,
        probe=probe_frame,
        skipped=tuple(skipped),
        metric=metric,
        labels=variant_labels,
        rejected=tuple(rejected),
    )
