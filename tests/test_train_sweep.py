"""``python -m ablations.train`` as users run it: subprocess sweeps and a real-data run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import ablations.configs  # noqa: F401  (registers the model group)
from ablations import store
from ablations.run import run_job

ROOT = Path(__file__).resolve().parents[1]
CIFAR10_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
TINY = ["debug=smoke", "experiment_name=cli"]  # one epoch of a tiny model, seconds


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ablations.train", *args, *TINY, f"paths.sweeps={tmp_path}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sweep_isolates_a_failing_job_and_a_rerun_skips_finished_runs(tmp_path):
    # phi=inf fails during training (recorded); model.T=0 is rejected before it (not recorded)
    sweep = ["-m", "loss=tet", "loss.phi=1.0,inf", "model.T=2,0"]
    first = cli(tmp_path, *sweep)
    output = first.stdout + first.stderr
    assert first.returncode == 1, output
    assert "model.T must be a positive integer or null, got 0" in output
    assert "Traceback" not in output and "training loss is inf" in output
    assert output.strip().splitlines()[-1].endswith("got 0")
    runs = {doc["run_id"]: doc for doc in store.iter_runs(tmp_path / "cli")}
    assert sorted(doc["status"] for doc in runs.values()) == ["failed", "finished"]
    assert not any("model.T=0" in path.name for path in (tmp_path / "cli").iterdir())
    finished = next(doc for doc in runs.values() if doc["status"] == "finished")
    assert finished["run_dir"] == finished["run_id"] and "model.T=2" in finished["run_id"]
    assert (tmp_path / "cli" / finished["run_id"] / "checkpoints" / "last.pt").exists()

    again = cli(tmp_path, *sweep)
    assert again.returncode == 1
    assert "finished before" in again.stdout + again.stderr
    assert store.read_run(tmp_path / "cli", finished["run_id"])["history"] == finished["history"]
    # each command stamps the documents it writes; the skipped run keeps the first one's id
    runs = {doc["run_id"]: doc for doc in store.iter_runs(tmp_path / "cli")}
    failed = next(doc for doc in runs.values() if doc["status"] == "failed")
    assert finished["invocation"] and failed["invocation"]
    assert runs[finished["run_id"]]["invocation"] == finished["invocation"] != failed["invocation"]

    # the earlier commands' failure is still in the store, but not this command's
    skipped = cli(tmp_path, "-m", "loss=tet", "loss.phi=1.0", "model.T=2")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr

    single = cli(tmp_path, "dataset.img_size=30")
    assert single.returncode == 1
    assert "img_size 30 is not supported" in single.stdout + single.stderr
    assert len(list(store.iter_runs(tmp_path / "cli"))) == 2


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    out = cli(
        tmp_path,
        "-m",
        "launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "downsample=lif_maxpool,maxpool_lif",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list(store.iter_runs(tmp_path / "cli"))
    assert sorted(doc["downsample"] for doc in runs) == ["lif_maxpool", "maxpool_lif"]
    assert all(doc["status"] == "finished" for doc in runs)
    # the command's invocation id reached both worker processes
    assert runs[0]["invocation"] and runs[0]["invocation"] == runs[1]["invocation"]


@pytest.mark.slow
def test_two_identical_sweeps_into_one_folder_train_each_run_once(tmp_path):
    """Two copies of one quickstart sweep started together share its four runs (`ablations.lock`)
    and leave the documents of one sweep; a third copy into its own folder is the reference."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tiny = ["-m", "experiment=quickstart", "debug=tiny", "~model.kwargs.depth"]
    tiny += ["~model.kwargs.num_heads"]  # the quickstart's block settings do not fit debug=tiny

    def sweep(where: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "ablations.train", *tiny, f"paths.sweeps={where}"]
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip

    procs = [sweep(tmp_path / "shared"), sweep(tmp_path / "shared"), sweep(tmp_path / "single")]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]
    shared = tmp_path / "shared" / "quickstart"
    runs = {doc["run_id"]: doc for doc in store.iter_runs(shared)}
    assert len(runs) == 4 and {doc["status"] for doc in runs.values()} == {"finished"}
    two = outputs[0].splitlines() + outputs[1].splitlines()
    for run_id in runs:
        mine = [line for line in two if f"- {run_id}: " in line]
        assert sum(f"{run_id}: epoch 1/3 " in line for line in mine) == 1, run_id  # trained once
        assert sum("skipped" in line for line in mine) == 1, run_id  # and skipped by the other
        log = (shared / run_id / "train.log").read_text().splitlines()
        assert sum(f"{run_id}: epoch 1/3 " in line for line in log) == 1
        assert sum("skipped" in line for line in log) == 1
        assert not (shared / run_id / "trainer.lock").exists()
    # the later of the two meets a run that the other is training, at least once
    assert any(": skipped, being trained by host " in line for line in two), two
    diff = subprocess.run([sys.executable, "-m", "reports", "diff", str(shared),
                           str(tmp_path / "single" / "quickstart")], cwd=ROOT, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert diff.returncode == 0, diff.stdout + diff.stderr


@pytest.mark.slow
def test_ddp_over_two_cpu_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "-m",
        "ablations.train",
    ]
    cmd += [
        *TINY,
        "trainer.epochs=2",
        "trainer.batch_size=16",
        "trainer.ddp=true",
        f"paths.sweeps={tmp_path}",
    ]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (doc,) = store.iter_runs(tmp_path / "cli")
    assert doc["status"] == "finished" and len(doc["history"]) == 2
    assert doc["history"][0]["test_top1"] >= 0 and doc["final"]["epochs_done"] == 2


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_JPEG.is_dir(), reason="needs the shared cifar10-jpeg folder")
def test_a_few_hundred_steps_on_real_cifar10_beat_chance(tmp_path):
    with initialize_config_module("ablations.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "experiment=cifar10_jpeg_cpu",
                "downsample=maxpool_lif",
                f"paths.data={CIFAR10_JPEG.parent}",
                "trainer.progress=none",
            ],
        )
    assert run_job(cfg, tmp_path / "run", tmp_path) == "finished"
    doc = store.read_run(tmp_path, "run")
    steps = sum(1 for _ in doc["history"]) * cfg.trainer.max_steps_per_epoch
    assert steps == 300
    assert doc["final"]["test_top1"] > 25.0, doc["history"]  # chance is 10 %
