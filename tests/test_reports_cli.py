"""``python -m reports``: every command-line mistake ends in one line on stderr that names the
value, exit status 2, no traceback and nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reports.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "reports" / "repro_table1_gpu"  # a committed sweep dir of four runs


@pytest.fixture
def place(tmp_path):
    """A folder holding: ``empty/``, ``nostore/`` (an empty results store), ``file``, a sweep
    whose only document is corrupt (``corrupt/``), and a good sweep (``good/``)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "nostore" / "results").mkdir(parents=True)
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "corrupt" / "results").mkdir(parents=True)
    (tmp_path / "corrupt" / "results" / "r.json").write_text('{"schema": ')
    shutil.copytree(STORE / "results", tmp_path / "good" / "results")
    return tmp_path


# (arguments after `build`; {p} is the fixture's folder), what the message must name
MISTAKES = {
    "missing results": (["--results", "{p}/nowhere", "--out", "{p}/out"], "'{p}/nowhere'"),
    "empty folder": (["--results", "{p}/empty", "--out", "{p}/out"], "'{p}/empty'"),
    "store without runs": (["--results", "{p}/nostore", "--out", "{p}/out"], "{p}/nostore"),
    "results is a file": (["--results", "{p}/file", "--out", "{p}/out"], "'{p}/file'"),
    "empty results path": (["--results", "", "--out", "{p}/out"], "''"),
    "one of two missing": (["--results", "{p}/good", "{p}/typo", "--out", "{p}/out"], "'{p}/typo'"),
    "out is a file": (["--results", "{p}/good", "--out", "{p}/file"], "'{p}/file'"),
    "out inside a file": (["--results", "{p}/good", "--out", "{p}/file/x"], "'{p}/file/x'"),
    "empty out": (["--results", "{p}/good", "--out", ""], "''"),
    "alpha too large": (["--results", "{p}/good", "--out", "{p}/out", "--alpha", "2"], "'2'"),
    "alpha not a number": (
        ["--results", "{p}/good", "--out", "{p}/out", "--alpha", "abc"],
        "'abc'",
    ),
    "alpha zero": (["--results", "{p}/good", "--out", "{p}/out", "--alpha", "0"], "'0'"),
    "bad metric": (["--results", "{p}/good", "--out", "{p}/out", "--metric", "top1"], "'top1'"),
    "bad errorbar": (["--results", "{p}/good", "--out", "{p}/out", "--errorbar", "se"], "'se'"),
    "bad probe x": (["--results", "{p}/good", "--out", "{p}/out", "--probe-x", "time"], "'time'"),
    "unknown flag": (["--results", "{p}/good", "--out", "{p}/out", "--skipbad"], "--skipbad"),
    "no out": (["--results", "{p}/good"], "--out"),
    "corrupt file": (
        ["--results", "{p}/corrupt", "--out", "{p}/out"],
        "{p}/corrupt/results/r.json",
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_build_mistakes_end_in_one_line(mistake, place, capsys):
    args, named = MISTAKES[mistake]
    args = [a.format(p=place) for a in args]
    try:
        status = main(["build", *args])
    except SystemExit as stop:  # argparse's own checks
        status = stop.code
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("python -m reports") and named.format(p=place) in line, line
    assert "Traceback" not in captured.err
    assert not (place / "out").exists() and (place / "file").read_text() == "not a folder"


def test_messages_say_what_is_expected(place, capsys):
    assert main(["build", "--results", str(place / "empty"), "--out", str(place / "o")]) == 2
    assert "expected a sweep dir holding results/, a results/ store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", "--results", str(place / "good"), "--out", "o", "--alpha", "2"])
    assert "expected a number between 0 and 1" in capsys.readouterr().err
    assert main(["build", "--results", str(place / "good"), "--out", str(place / "file")]) == 2
    assert "expected a folder; it is created if missing" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [["build", "--results", "/nonexistent", "--out", "x"], ["diff", "/nonexistent", "/nowhere"]],
    ids=["build", "diff"],
)
def test_missing_paths_from_the_shell(args, tmp_path):
    """The real command line: exit 2, one line naming the path, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "reports", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "/nonexistent" in line and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
