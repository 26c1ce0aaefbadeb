"""`python -m reports diff`: two stores' numbers compared, timings and provenance aside."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from reports.__main__ import main
from reports.diff import diff_stores, differences

DOC = {
    "schema": "gradprobe.run/1",
    "run_id": "downsample=maxpool_lif",
    "status": "finished",
    "git_sha": "abc",
    "invocation": "one",
    "versions": {"torch": "2.0"},
    "config": {"seed": 0, "paths": {"sweeps": "/a"}, "optim": {"lr": 0.002}},
    "history": [{"epoch": 1, "test_top1": 97.5, "epoch_time_s": 1.5, "images_per_s": 100.0}],
    "probe": [{"precision": math.nan, "windows": 0}],
    "final": {"test_top1": 97.5, "wall_time_s": 9.0},
}


def _store(root: Path, *docs: dict) -> Path:
    (root / "results").mkdir(parents=True)
    for doc in docs:
        (root / "results" / f"{doc['run_id']}.json").write_text(json.dumps(doc))
    return root


def test_timings_provenance_and_paths_are_ignored_and_nan_equals_nan() -> None:
    other = copy.deepcopy(DOC)
    other.update(git_sha="def", invocation="two", versions={"torch": "2.1"})
    other["config"]["paths"] = {"sweeps": "/b"}
    other["history"][0].update(epoch_time_s=7.0, images_per_s=3.0)
    other["final"]["wall_time_s"] = 1.0
    assert list(differences(DOC, other)) == []


def test_every_number_and_key_counts() -> None:
    other = copy.deepcopy(DOC)
    other["history"][0]["test_top1"] = 97.50000000000001
    other["config"]["optim"]["lr"] = 2e-3  # the same float
    other["config"]["neuron"] = {"tau": 2.0}
    other["probe"].append({"precision": 1.0, "windows": 4})
    other["final"]["test_top1"] = 97  # an int is not the float 97.5
    assert list(differences(DOC, other)) == [
        "config.neuron: only in the second",
        "final.test_top1: 97.5 != 97",
        "history[0].test_top1: 97.5 != 97.50000000000001",
        "probe: 1 entries != 2",
    ]


def test_stores_compared_run_by_run(tmp_path: Path) -> None:
    changed = {**copy.deepcopy(DOC), "run_id": "downsample=lif_maxpool"}
    first = _store(tmp_path / "a", DOC, changed)
    changed = copy.deepcopy(changed)
    changed["history"][0]["test_top1"] = 10.0
    lonely = {**DOC, "run_id": "downsample=avgpool_lif"}
    second = _store(tmp_path / "b", DOC, changed, lonely)
    result = diff_stores(first, second / "results")  # a sweep dir or the store itself
    assert not result.identical
    assert result.runs == {
        "downsample=lif_maxpool": ["history[0].test_top1: 97.5 != 10.0"],
        "downsample=maxpool_lif": [],
    }
    assert result.only_second == ["downsample=avgpool_lif"] and result.only_first == []
    assert result.lines()[-1] == "1 of 2 common runs identical"


def test_cli_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = _store(tmp_path / "a", DOC), _store(tmp_path / "b", DOC)
    assert main(["diff", str(first), str(second)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "downsample=maxpool_lif: identical",
        "1 of 1 common runs identical",
    ]
    (second / "results" / "downsample=maxpool_lif.json").write_text("{not json")
    assert main(["diff", str(first), str(second)]) == 2
    assert "unreadable run document" in capsys.readouterr().err
    assert main(["diff", str(first), str(tmp_path / "nowhere")]) == 2
    assert "no results store at" in capsys.readouterr().err
