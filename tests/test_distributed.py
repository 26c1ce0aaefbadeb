"""`ablations.distributed`: a failing rank ends the job on every rank, its error recorded once."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

import ablations.configs  # noqa: F401  (registers the model group)
from ablations import store
from ablations.checks import ConfigError
from ablations.distributed import Dist

ROOT = Path(__file__).resolve().parent.parent


def test_one_process_is_a_no_op():
    dist = Dist()
    assert dist.broadcast({"a": 1}) == {"a": 1}
    assert dist.fail("boom") == "boom"  # alone, this process records its own error
    dist.close()


def test_the_timeout_is_checked(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    with initialize_config_module("ablations.conf", version_base="1.3"):
        cfg = compose("config", overrides=["trainer.ddp=true", "trainer.ddp_timeout_s=0"])
    with pytest.raises(
        ConfigError, match=r"trainer\.ddp_timeout_s must be a positive integer, got 0"
    ):
        Dist.from_config(cfg.trainer)


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_error_recorded_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += [str(ROOT / "tests" / "ddp_failing_rank.py"), "debug=smoke", "experiment_name=ddp"]
    cmd += ["trainer.epochs=2", "trainer.ddp=true", f"paths.sweeps={tmp_path}"]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    elapsed, output = time.time() - t0, out.stdout + out.stderr
    assert out.returncode != 0, output[-3000:]
    assert elapsed < 120, output[-3000:]  # not the process group's 600 s timeout
    (doc,) = store.iter_runs(tmp_path / "ddp")
    assert doc["status"] == "failed" and len(doc["history"]) == 1, doc["error"]
    assert doc["error"] == "rank 1: RuntimeError: injected failure on rank 1"
    run_dir = tmp_path / "ddp" / doc["run_id"]
    assert not (run_dir / "trainer.lock").exists()
    # recorded once: rank 0 names the cause, not its own broken connection
    assert output.count("failed: rank 1: RuntimeError") <= 1
