"""``trainer.exact`` CPU runs in a fresh process with portable numerics (`gradprobe.portable`).

An exact CPU run promises the same run document on every x86-64 CPU with AVX2, which needs the
math libraries pinned before the process computes anything (ATen and MKL choose their code once).
A sweep's process has usually computed already, and pinning it would change the numbers of the
non-exact runs it trains next; so each exact CPU run whose process is not portable trains in a
child started with `gradprobe.portable.child_environment`::

    python -m ablations.isolate <spec.json>

The spec holds the job's resolved config, its folders and the log file Hydra opened for it; the
child appends its log there and to the console as the parent would, runs
`ablations.run.run_job`, and ends with the status as its exit code (`STATUS_CODES`). The parent
returns that status as its own job's. Nothing else changes: the child takes the run's lock,
resumes its checkpoint and writes its documents exactly as an in-process job does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gradprobe import portable

STATUS_CODES = {"finished": 0, "failed": 1, "rejected": 2, "skipped": 3}
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job format

log = logging.getLogger(__name__)


def on_cpu(cfg: DictConfig) -> bool:
    """Whether the job trains on the CPU (``trainer.device``, ``auto`` without CUDA)."""
    device = str(cfg.trainer.device)
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def needs_child(cfg: DictConfig) -> bool:
    """An exact CPU run in a process that does not compute portably (and can be made to)."""
    if not (cfg.trainer.get("exact", False) is True and on_cpu(cfg)):
        return False
    if portable.supported() is not None:
        log.warning(
            "trainer.exact: %s; the run's numbers hold on this CPU only", portable.supported()
        )
        return False
    return not portable.adopt()


def run_in_child(
    cfg: DictConfig, run_dir: Path, sweep_dir: Path, job_num: int, log_file: Path | None
) -> str:
    """Train the job in a portable child process and return its status."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="gradprobe-job-", suffix=".json")
    os.close(handle)
    spec = Path(name)
    spec.write_text(
        json.dumps(
            {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "run_dir": str(run_dir),
                "sweep_dir": str(sweep_dir),
                "job_num": job_num,
                "log_file": str(log_file) if log_file else None,
            }
        )
    )
    log.info("%s: exact CPU run, training in a process with portable numerics", run_dir.name)
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        code = subprocess.call(
            [sys.executable, "-m", "ablations.isolate", str(spec)],
            env=portable.child_environment(),
        )
        reason = json.loads(spec.read_text()).get("rejected")
    finally:
        spec.unlink(missing_ok=True)
    if reason:  # the child's one-line reason, for the command's summary
        from ablations.run import REJECTIONS

        REJECTIONS[run_dir.name] = reason
    by_code = {v: k for k, v in STATUS_CODES.items()}
    if code not in by_code:
        log.error("%s: the portable process ended with exit status %d", run_dir.name, code)
        return "failed"
    return by_code[code]


def _child(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if spec["log_file"]:
        handlers.append(logging.FileHandler(spec["log_file"], mode="a"))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers)
    portable.enter()  # before anything computes; the harness is imported after it
    from ablations import configs
    from ablations.run import REJECTIONS, run_job

    configs.register_configs()
    cfg = OmegaConf.create(spec["config"])
    run_dir = Path(spec["run_dir"])
    status = run_job(cfg, run_dir, Path(spec["sweep_dir"]), job_num=spec["job_num"])
    if status == "rejected":  # handed back through the spec: the parent names it in its summary
        spec["rejected"] = REJECTIONS.get(run_dir.name, "rejected before training")
        Path(spec_path).write_text(json.dumps(spec))
    return STATUS_CODES.get(status, STATUS_CODES["failed"])


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
