"""reports.output: a ``kill -9`` at any point of ``python -m reports build`` never leaves a
truncated file without the ``INCOMPLETE`` marker, and the next build completes the folder.

The stores are taken from the committed mini study (real harness documents with probe rows, so
a build writes tables, CSVs, PNG and PDF figures). The *previous* report is built from the
seed-0 runs, the *new* one from seeds 0 and 1, so every file of the two differs and a file left
from the previous build is told apart from one the killed build wrote.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reports.__main__ import main
from reports.build import build_report
from reports.output import MARKER, Staged

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "reports" / "repro_table1_mini" / "results"

# Runs `python -m reports build` with `write_atomic` wrapped to SIGKILL the process when the
# `at`-th file write starts ("before"), halfway through its content ("inside", a half-written
# temporary file stays behind), or once it returned ("after"). Write 1 is the marker.
KILLER = """
import os, signal, sys
import reports.output as output
real, mode, at = output.write_atomic, sys.argv[1], int(sys.argv[2])
calls = 0
def write(path, data):
    global calls
    calls += 1
    if calls == at and mode == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    if calls == at and mode == "inside":
        payload = data.encode() if isinstance(data, str) else data
        def half(fh):
            fh.write(payload[: len(payload) // 2])
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, half)
    real(path, data)
    if calls == at and mode == "after":
        os.kill(os.getpid(), signal.SIGKILL)
output.write_atomic = write
from reports.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


def _files(folder: Path) -> dict[str, bytes]:
    """The visible files of a folder (temporaries are hidden), by name."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two stores (previous: seed 0; new: seeds 0 and 1), their complete reports, and the
    order in which a build writes the new report's files."""
    root = tmp_path_factory.mktemp("study")
    for name, seeds in (("previous", "0"), ("new", "01")):
        store = root / name / "results"
        store.mkdir(parents=True)
        for path in STUDY.glob(f"*model=spikformer_2_384_cifar,seed=[{seeds}].json"):
            shutil.copy(path, store)
        report = build_report(root / name, root / f"{name}_ref")
    return root, [path.name for path in report.files]


# (mode, write number): write 1 is the marker, write k + 1 the k-th file of the report.
KILL_POINTS = {
    "rendered": ("before", 1),  # everything rendered, nothing written yet
    "in-marker": ("inside", 1),  # the marker itself half-written
    "in-first-file": ("inside", 2),  # the first table file half-written
    "in-pdf": ("inside", "pdf"),  # a PDF half-written (the 0-byte PDF of the issue)
    "before-unmark": ("after", "last"),  # every file written, the marker not yet removed
}


@pytest.mark.parametrize(
    ("point", "previous"),
    [*((point, True) for point in KILL_POINTS), ("in-pdf", False), ("before-unmark", False)],
)
def test_a_killed_build_leaves_complete_files_or_the_marker(study, tmp_path, point, previous):
    root, order = study
    old = _files(root / "previous_ref") if previous else {}
    new = _files(root / "new_ref")
    assert set(new) == set(order) and MARKER not in new
    same = {name for name in old if old[name] == new[name]}
    assert same <= {"tables.tex"}, "the two reports must differ (tables.tex only \\inputs)"
    mode, at = KILL_POINTS[point]
    if at == "pdf":
        at = 2 + next(i for i, name in enumerate(order) if name.endswith(".pdf"))
    elif at == "last":
        at = 1 + len(order)
    out = tmp_path / "report"
    if previous:
        shutil.copytree(root / "previous_ref", out)
    args = ["build", "--results", str(root / "new"), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", KILLER, mode, str(at), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert done.stdout == ""  # the coverage and "wrote N files" come only after completion

    left = _files(out) if out.exists() else {}
    if MARKER in left:
        marker = left.pop(MARKER).decode()
        assert f"--out {out}" in marker and "started:" in marker
        assert all(f"\n  {name}\n" in marker for name in order)
        for name, data in left.items():  # each file complete: from the killed build or before
            assert data in (new.get(name), old.get(name)), f"{name} is neither version"
    else:
        assert left == old, "without the marker the previous report must be intact"

    assert main(args) == 0  # a rerun completes the folder and removes the marker
    assert _files(out) == new | {n: d for n, d in old.items() if n not in new}
    assert not list(out.glob(".*.tmp")), "the rerun removes what the killed write left"


def test_the_kill_points_fall_inside_the_build(study):
    """The write numbers above are real points: tables first, figures (two PDFs) later."""
    _, order = study
    assert len(order) >= 10 and sum(name.endswith(".pdf") for name in order) == 2
    assert order[0].endswith(".csv") and order[-1] == "coverage.md"


def test_staged_files_are_written_only_on_commit(tmp_path):
    staged = Staged(tmp_path / "out")
    path = staged.add("a.csv", "x\n")
    assert path == tmp_path / "out" / "a.csv" and not (tmp_path / "out").exists()
    assert staged.commit("a test") == (path,)
    assert _files(tmp_path / "out") == {"a.csv": b"x\n"}
