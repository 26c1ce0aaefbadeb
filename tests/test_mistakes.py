"""The mistakes a newcomer makes, each ending before training with one line naming the value.

`MISTAKES` is one table: the command (``python -m <module> <args>``), and the words its last
line must hold (the bad value, and the key where there is one). Every row runs as the real
command in a subprocess (`test_every_mistake_ends_before_training`, slow: a few seconds each);
the default suite runs the rows of `END_TO_END` that way, and the harness rows in-process too
(`test_harness_mistakes_are_one_line_config_errors`: the same composition and checks as the
command's, a fraction of a second each). Add a row for every new mistake you see.

In the commands, ``{tmp}`` is the test's folder and ``{empty}`` an empty folder in it; every
harness command writes its sweeps under ``{tmp}/sweeps`` (``GRADPROBE_SWEEPS``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ("ablations.train", "debug=smoke")  # a tiny run: seconds, if a mistake slipped through
QUICKSTART = ("ablations.train", "-m", "experiment=quickstart")
PROBE = ("gradprobe.cli", "probe", "--no-progress", "--num-images", "8", "--out", "{tmp}/out")
COST = ("gradprobe.cost", "--model")
REPORTS = ("reports", "build", "--out", "{tmp}/report")


class Mistake(NamedTuple):
    name: str
    command: tuple[str, ...]  # module, then its arguments
    says: tuple[str, ...]  # what the last line holds
    marks: tuple = ()


M = Mistake
MISTAKES = [
    # the issue's acceptance case, and the typos Hydra's own message leads to
    M("plus-typo", (*QUICKSTART, "+trainer.epoch=2"), ("'trainer.epoch'", "trainer.epochs")),
    M("plus-group-typo", (*QUICKSTART, "+trainr.epochs=2"), ("'trainr.epochs'", "trainer.epochs")),
    M("plusplus-typo", (*TRAIN, "++trainer.epoch=2"), ("'trainer.epoch'", "trainer.epochs")),
    M("key-typo", (*TRAIN, "trainer.epoch=2"), ("'trainer.epoch'", "trainer.epochs")),
    M("plus-existing", (*TRAIN, "+trainer.epochs=2"), ("'trainer.epochs'", "without the +")),
    M("delete-read-key", (*TRAIN, "~trainer.epochs"), ("'trainer.epochs'", "cannot be deleted")),
    M("optim-key-typo", (*TRAIN, "+optim.lrr=1"), ("'optim.lrr'", "optim.lr")),
    M("kwargs-typo", (*QUICKSTART, "+model.kwargs.detph=1"), ("detph", "model.kwargs.depth")),
    M("kwargs-set-elsewhere", (*TRAIN, "+model.kwargs.num_classes=3"), ("num_classes", "dataset")),
    # a typo in every config group
    M("model-group", (*TRAIN, "model=nope"), ("model", "'nope'", "spikformer_2_384_cifar")),
    M("downsample-group", (*TRAIN, "downsample=maxpool"), ("downsample", "'maxpool'")),
    M("neuron-group", (*TRAIN, "neuron=liff"), ("neuron", "'liff'", "plif")),
    M("dataset-group", (*TRAIN, "dataset=cifar"), ("dataset", "'cifar'", "cifar10")),
    M("loss-group", (*TRAIN, "loss=tett"), ("loss", "'tett'", "tet")),
    M("optim-group", (*TRAIN, "optim=adamm"), ("optim", "'adamm'", "adamw")),
    M("sched-group", (*TRAIN, "sched=cosin"), ("sched", "'cosin'", "cosine")),
    M("trainer-group", (*TRAIN, "trainer=defualt"), ("trainer", "'defualt'", "default")),
    M("speed-group", (*TRAIN, "speed=fastest"), ("speed", "'fastest'", "exact")),
    M("probe-group", (*TRAIN, "probe=landng"), ("probe", "'landng'", "landing")),
    M("logger-group", (*TRAIN, "logger=tensorbord"), ("logger", "'tensorbord'", "tensorboard")),
    M("debug-group", ("ablations.train", "debug=tinny"), ("debug", "'tinny'", "tiny")),
    M("experiment-group", (*TRAIN, "experiment=nope"), ("experiment", "'nope'", "quickstart")),
    M("launcher-group", (*TRAIN, "launcher=nope"), ("launcher", "'nope'", "joblib")),
    # wrong types, zero and negative sizes, values out of range
    M("seed-type", (*TRAIN, "seed=abc"), ("seed", "'abc'", "integer")),
    M("lr-type", (*TRAIN, "optim.lr=abc"), ("optim.lr", "'abc'", "positive number")),
    M("lr-negative", (*TRAIN, "optim.lr=-1"), ("optim.lr", "-1", "positive number")),
    M("epochs-type", (*TRAIN, "trainer.epochs=abc"), ("trainer.epochs", "'abc'")),
    M("epochs-negative", (*TRAIN, "trainer.epochs=-1"), ("trainer.epochs", "-1")),
    M("flag-type", (*TRAIN, "trainer.deterministic=maybe"), ("trainer.deterministic", "'maybe'")),
    M("batch-zero", (*TRAIN, "trainer.batch_size=0"), ("trainer.batch_size", "got 0")),
    M("limit-zero", (*TRAIN, "dataset.limit_train=0"), ("dataset.limit_train", "got 0")),
    M("img-size-negative", (*TRAIN, "dataset.img_size=-3"), ("dataset.img_size", "-3")),
    M("T-zero", (*TRAIN, "model.T=0"), ("model.T", "got 0")),
    M("probe-every-zero", (*TRAIN, "probe=landing", "probe.every=0"), ("probe.every", "got 0")),
    M("width-zero", (*TRAIN, "model.kwargs.embed_dim=0"), ("embed_dim", "got 0")),
    M("kwarg-type", (*QUICKSTART, "model.kwargs.depth=abc"), ("model.kwargs.depth", "'abc'")),
    M("share-range", (*TRAIN, "dataset.augment.hflip=2"), ("dataset.augment.hflip", "got 2")),
    M("betas-range", (*TRAIN, "optim.betas=[1.5,0.9]"), ("optim", "beta", "1.5")),
    M("device-name", (*TRAIN, "trainer.device=gpu"), ("trainer.device", "'gpu'", "cuda")),
    M("override-syntax", (*TRAIN, "trainer.epochs=[1"), ("[1",)),
    M("batch-over-data", (*TRAIN, "trainer.batch_size=500"), ("trainer.batch_size=500", "128")),
    # missing and empty paths
    M(
        "data-root-missing",
        ("ablations.train", "experiment=cifar10_jpeg_cpu", "paths.data=/nonexistent"),
        ("/nonexistent/cifar10-jpeg",),
    ),
    M(
        "dataset-missing",
        (*TRAIN, "dataset=cifar10", "dataset.download=false", "paths.data={empty}"),
        ("{empty}/cifar10", "dataset.download=true"),
    ),
    M("data-path-empty", (*TRAIN, "paths.data="), ("paths.data", "''")),
    M("sweeps-path-empty", (*TRAIN, "paths.sweeps="), ("paths.sweeps", "''")),
    # gradprobe probe
    M("probe-model", (*PROBE, "--model", "nope"), ("'nope'", "sps_tokenizer_cifar")),
    M("probe-variant", (*PROBE, "--variants", "maxpool"), ("'maxpool'", "maxpool_lif")),
    M("probe-images-zero", (*PROBE, "--num-images", "0"), ("--num-images", "'0'")),
    M("probe-batch-negative", (*PROBE, "--batch-size", "-1"), ("--batch-size", "'-1'")),
    M("probe-T-zero", (*PROBE, "--T", "0"), ("--T", "'0'")),
    M("probe-data-missing", (*PROBE, "--data", "/nonexistent"), ("'/nonexistent'",)),
    M("probe-data-empty-folder", (*PROBE, "--data", "{empty}"), ("{empty}", "class")),
    M("probe-data-empty-path", (*PROBE, "--data", ""), ("--data", "''")),
    M("probe-width-zero", (*PROBE, "--model-arg", "embed_dim=0"), ("embed_dim", "got 0")),
    M("probe-kwarg-typo", (*PROBE, "--model-arg", "detph=1"), ("'detph'",)),
    # gradprobe.cost
    M("cost-model", (*COST, "nope"), ("'nope'", "spikformer_4_384_cifar")),
    M("cost-variant", (*COST, "sps_tokenizer_cifar", "--downsample", "nope"), ("'nope'",)),
    M("cost-T-zero", (*COST, "sps_tokenizer_cifar", "--T", "0"), ("--T", "'0'")),
    M("cost-batch-type", (*COST, "sps_tokenizer_cifar", "--batch-size", "abc"), ("'abc'",)),
    # reports build
    M("reports-missing", (*REPORTS, "--results", "/nonexistent"), ("/nonexistent",)),
    M("reports-empty", (*REPORTS, "--results", "{empty}"), ("{empty}",)),
    M("reports-alpha", (*REPORTS, "--results", "{empty}", "--alpha", "2"), ("--alpha", "'2'")),
    M("reports-metric", (*REPORTS, "--results", "{empty}", "--metric", "top1"), ("'top1'",)),
]
#: The rows the default suite runs as real commands (one of each kind of check).
END_TO_END = {
    "plus-typo",
    "key-typo",
    "experiment-group",
    "seed-type",
    "dataset-missing",
    "batch-over-data",
    "probe-data-missing",
    "cost-model",
    "reports-missing",
    "reports-empty",
}


def rows(selected: bool | None = None) -> list:
    return [
        pytest.param(m, id=m.name, marks=m.marks)
        for m in MISTAKES
        if selected is None or (m.name in END_TO_END) == selected
    ]


def fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{empty}", str(tmp / "empty"))


def run_mistake(mistake: Mistake, tmp: Path) -> subprocess.CompletedProcess:
    (tmp / "empty").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADPROBE_SWEEPS": str(tmp / "sweeps")}
    env.pop("HYDRA_FULL_ERROR", None)
    module, *args = (fill(a, tmp) for a in mistake.command)
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_stopped_before_training(mistake: Mistake, out: subprocess.CompletedProcess, tmp: Path):
    both = out.stdout + out.stderr
    lines = (out.stderr or out.stdout).strip().splitlines()
    last = lines[-1] if lines else ""
    assert out.returncode != 0, both
    for word in mistake.says:
        assert fill(word, tmp) in last, f"{fill(word, tmp)!r} not in the last line {last!r}"
    assert "Traceback" not in both, both
    assert "epoch 1/" not in both, both
    assert not list(tmp.glob("**/results/*.json")), "a rejected run reached the results store"
    sweeps = tmp / "sweeps"
    assert not sweeps.exists() or not any(sweeps.rglob("*.yaml")), "a run folder was left"


@pytest.mark.parametrize("mistake", rows(selected=True))
def test_a_mistake_ends_before_training(mistake, tmp_path):
    assert_stopped_before_training(mistake, run_mistake(mistake, tmp_path), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("mistake", rows(selected=False))
def test_every_mistake_ends_before_training(mistake, tmp_path):
    assert_stopped_before_training(mistake, run_mistake(mistake, tmp_path), tmp_path)


def in_process_error(args: list[str]) -> str:
    """What the harness command says for ``args``: Hydra's composition, then the preflight's
    checks (`ablations.preflight`), with the compose API instead of a process."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import ablations.configs  # noqa: F401  (registers the model group)
    from ablations import keys, preflight
    from ablations.checks import ConfigError, check_config
    from gradprobe.data import DataNotFoundError

    overrides = [a for a in args if a != "-m"]
    with initialize_config_module("ablations.conf", version_base="1.3"):
        try:
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            plain = [o for o in overrides if not o.startswith("++")]
            found = keys.unknown_added_key(
                cfg, overrides, cfg.hydra.runtime.choices, base=lambda: compose("config", plain)
            )
            if found:
                return found
            check_config(cfg)
        except (HydraException, OmegaConfBaseException) as err:
            return preflight.one_line(err)
        except (ConfigError, DataNotFoundError) as err:
            return str(err)
    return ""


HARNESS = [
    pytest.param(m, id=m.name)
    for m in MISTAKES
    if m.command[0] == "ablations.train" and m.name not in ("batch-over-data",)
]


@pytest.mark.parametrize("mistake", HARNESS)
def test_harness_mistakes_are_one_line_config_errors(mistake, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADPROBE_SWEEPS", str(tmp_path / "sweeps"))
    (tmp_path / "empty").mkdir()
    message = in_process_error([fill(a, tmp_path) for a in mistake.command[1:]])
    assert message and "\n" not in message
    for word in mistake.says:
        assert fill(word, tmp_path) in message, message


def test_the_issue_acceptance_case_leaves_the_store_untouched(tmp_path):
    """``-m experiment=quickstart +trainer.epoch=2``: non-zero before training, naming
    trainer.epochs; an existing store of the quickstart keeps exactly its files."""
    results = tmp_path / "sweeps" / "quickstart" / "results"
    results.mkdir(parents=True)
    (results / "earlier.json").write_text("{}")
    (plus,) = [m for m in MISTAKES if m.name == "plus-typo"]
    out = run_mistake(plus, tmp_path)
    assert out.returncode == 1 and "trainer.epochs" in out.stderr.strip().splitlines()[-1]
    assert [p.name for p in (tmp_path / "sweeps" / "quickstart").iterdir()] == ["results"]
    assert [p.name for p in results.iterdir()] == ["earlier.json"]
