"""The results store: atomic writes, validation, corrupt files skipped with a warning."""

import json

import pytest

from ablations.store import SCHEMA, iter_runs, read_run, store_dir, write_run


def _doc(run_id: str, **changes):
    doc = {
        "schema": SCHEMA,
        "run_id": run_id,
        "status": "finished",
        "model": "m",
        "downsample": "maxpool_lif",
        "dataset": "digits",
        "seed": 0,
        "history": [],
    }
    doc.update(changes)
    return doc


def test_write_then_read(tmp_path):
    path = write_run(tmp_path, _doc("a"))
    assert path.parent == tmp_path / "results"
    assert read_run(tmp_path, "a")["status"] == "finished"
    write_run(tmp_path, _doc("a", status="failed", error="boom"))
    assert read_run(tmp_path, "a")["error"] == "boom"
    assert not list((tmp_path / "results").glob(".*tmp"))


def test_store_dir_accepts_sweep_dir_or_store(tmp_path):
    write_run(tmp_path, _doc("a"))
    assert store_dir(tmp_path) == tmp_path / "results"
    assert store_dir(tmp_path / "results") == tmp_path / "results"


def test_invalid_documents_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks 'seed'"):
        write_run(tmp_path, {k: v for k, v in _doc("a").items() if k != "seed"})
    with pytest.raises(ValueError, match="choices: running, finished, failed"):
        write_run(tmp_path, _doc("a", status="done"))


def test_corrupt_files_are_skipped_with_a_warning(tmp_path):
    write_run(tmp_path, _doc("b"))
    write_run(tmp_path, _doc("a"))
    bad = tmp_path / "results" / "c.json"
    bad.write_text(json.dumps(_doc("c"))[:40])
    with pytest.warns(UserWarning, match="c.json"):
        runs = list(iter_runs(tmp_path))
    assert [r["run_id"] for r in runs] == ["a", "b"]
    assert read_run(tmp_path, "c") is None


def test_written_files_are_world_readable(tmp_path):
    path = write_run(tmp_path, _doc("a"))
    assert path.stat().st_mode & 0o044 == 0o044
