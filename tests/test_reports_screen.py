"""reports.screen: unreadable results files stop a build (or are skipped and named with the
cells that lost runs), and the documents of configs rejected before training are ignored.

The stores hold real harness documents from the committed mini study, whose run ids are the
overrides (``downsample=...,model=...,seed=N``).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from reports.__main__ import main
from reports.load import load_results
from reports.screen import is_rejected, shape_problem

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "reports" / "repro_table1_mini" / "results"
BASE = "downsample=lif_maxpool,model=spikformer_2_384_cifar"
CML = "downsample=maxpool_lif,model=spikformer_2_384_cifar"
LOST_CELL = (
    "dataset=cifar10-jpeg, model=spikformer_2_384_cifar(depth=2,embed_dim=64,num_heads=4), "
    "T=4, epochs=4, variant=lif_maxpool"
)


def _sweep(root: Path) -> Path:
    """A sweep dir with three seeds of the baseline and of CML (Spikformer)."""
    (root / "results").mkdir(parents=True)
    for run in (BASE, CML):
        for seed in range(3):
            shutil.copy(STUDY / f"{run},seed={seed}.json", root / "results")
    return root


def _document(root: Path, run_id: str) -> dict:
    return json.loads((root / "results" / f"{run_id}.json").read_text())


def _rejected(doc: dict, run_id: str, error: str) -> dict:
    """What older harness versions wrote for a config rejected before the model was built."""
    doc = copy.deepcopy(doc)
    doc.update(
        run_id=run_id, status="failed", error=error, history=[], probe=[], final=None,
        params=None,
    )  # fmt: skip
    return doc


def _build(sweep: Path, out: Path, *extra: str) -> int:
    return main(["build", "--results", str(sweep), "--out", str(out), "--no-figures", *extra])


def test_a_corrupt_file_stops_the_build_naming_it(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep")
    assert _build(sweep, tmp_path / "out") == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    capsys.readouterr()
    broken = sweep / "results" / f"{BASE},seed=2.json"
    broken.write_text(broken.read_text()[:5000])  # a document cut off mid-way

    assert _build(sweep, tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"python -m reports build: unreadable results file {broken}: "
        + captured.err.split(f"{broken}: ", 1)[1].rstrip("\n")
    ]
    assert "(--skip-bad builds without it)" in captured.err and "Traceback" not in captured.err
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert after == before, "a build stopped by a bad file writes nothing"


def test_skip_bad_builds_and_names_the_cell_that_lost_a_run(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep")
    broken = sweep / "results" / f"{BASE},seed=2.json"
    broken.write_text(broken.read_text()[:5000])
    foreign = sweep / "results" / "notes.json"
    foreign.write_text('{"comment": "not a run"}')

    assert _build(sweep, tmp_path / "out", "--skip-bad") == 0
    captured = capsys.readouterr()
    coverage = (tmp_path / "out" / "coverage.md").read_text()
    assert coverage in captured.out and "Traceback" not in captured.err
    assert "Read 5 run documents (2 files skipped)" in coverage
    assert f"- {broken.name}: " in coverage
    assert "- notes.json: not a gradprobe.run/1 document" in coverage
    assert f"- {LOST_CELL}: 1 run(s) lost ({broken.name})" in coverage
    assert "- cell unknown (no readable run of the store differs only in seed): " in coverage
    cells = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert sorted(cells["n"]) == [2, 3]  # the baseline averaged over the two seeds left


def test_a_document_with_fields_of_the_wrong_type_is_unreadable(tmp_path):
    sweep = _sweep(tmp_path / "sweep")
    doc = _document(sweep, f"{CML},seed=1")
    doc["history"] = "lost"
    (sweep / "results" / f"{CML},seed=1.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="'history' is not a list of objects"):
        results = load_results(sweep)
    (skipped,) = results.skipped
    assert skipped.name == f"{CML},seed=1.json" and "variant=maxpool_lif" in skipped.cell
    assert shape_problem({**doc, "history": [], "seed": "abc"}) == "'seed' is 'abc', not an integer"


def test_documents_of_rejected_configs_are_ignored_with_a_note(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep")
    good = _document(sweep, f"{BASE},seed=0")
    rejected = [
        _rejected(good, f"{BASE},seed=0,+trainr.epochs={i}", "unknown key trainr.epochs")
        for i in range(8)
    ]  # the same cell as a finished run: was shown as "3 (8 failed)"
    negative = _rejected(good, f"{BASE},trainer.epochs=-1", "trainer.epochs must be ≥ 1")
    negative["epochs_planned"] = -1  # was shown as the row "Spikformer-2-64 (...)--1E"
    crashed = {**_rejected(good, f"{CML},seed=9", "NonFiniteLossError: loss is nan"),
               "params": good["params"], "seed": 9}  # fmt: skip
    for doc in [*rejected, negative, crashed]:
        (sweep / "results" / f"{doc['run_id']}.json").write_text(json.dumps(doc))
    assert [is_rejected(d) for d in (good, negative, crashed)] == [False, True, False]

    assert _build(sweep, tmp_path / "out") == 0
    out = tmp_path / "out"
    coverage = (out / "coverage.md").read_text()
    assert (
        "Ignored 9 documents of runs rejected before training (config errors; the harness no "
        "longer writes them): "
    ) in coverage
    assert f"{BASE},trainer.epochs=-1" in coverage
    table = (out / "table1_other.md").read_text()
    assert "-1E" not in table and "8 failed" not in table
    assert "| 3 (1 failed)" in table  # a run that built its model and crashed still counts
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 7 and not runs["run_id"].str.contains("epochs").any()
    assert "Read 7 run documents (0 files skipped): 6 finished and averaged, 1 failed" in coverage
