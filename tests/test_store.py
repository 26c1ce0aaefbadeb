"""The results store: atomic writes, validation, corrupt files skipped with a warning."""

import json
import os

import pytest

from ablations import store
from ablations.store import SCHEMA, iter_runs, read_run, store_dir, write_atomic, write_run


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


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process's umask for the test; the old one comes back after."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def test_written_files_are_world_readable(tmp_path, umask):
    umask(0o022)  # the usual umask: results are shared
    path = write_run(tmp_path, _doc("a"))
    assert path.stat().st_mode & 0o044 == 0o044


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_a_plain_open_gives(tmp_path, umask, mask, mode):
    umask(mask)
    write_atomic(tmp_path / "a.txt", "x")
    with open(tmp_path / "b.txt", "w") as fh:
        fh.write("x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == mode


def test_one_writer_takes_text_bytes_or_a_writing_function(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(store.os, "fsync", lambda fd: synced.append(fd) or fsync(fd))
    write_atomic(tmp_path / "deep" / "t.txt", "héllo")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    write_atomic(tmp_path / "f.bin", lambda fh: fh.write(b"written"))
    assert (tmp_path / "deep" / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "f.bin").read_bytes() == b"written"
    assert len(synced) == 3  # every file reaches the disk before its rename


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "doc.json"
    write_atomic(path, "old")

    def half_then_boom(fh):
        fh.write(b"ne")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, half_then_boom)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]
