"""``python -m ablations.train``: train one run, or a sweep of them with ``-m``.

Examples::

    python -m ablations.train -m experiment=quickstart          # 4 variants, digits, CPU, minutes
    python -m ablations.train -m downsample=lif_maxpool,maxpool_lif,avgpool_lif,strided_conv \\
        model=spikformer_4_384_cifar,spikingformer_4_384_cifar dataset=cifar10 seed=0,1,2
    python -m ablations.train -m experiment=paper_table1_cifar10 launcher=slurm

Each job writes ``<paths.sweeps>/<experiment_name>/<run_id>/`` (``run_id`` spells the job's
overrides) and its document in ``<paths.sweeps>/<experiment_name>/results/``. Running the same
command again skips finished runs and resumes interrupted ones. Every job's config is checked
before any job starts: a mistake (an unknown key, a bad value, missing data) is one line on
stderr and nothing is recorded for that run. A job that fails during training is recorded as
failed and the sweep goes on. The command exits with status 1 naming the runs that failed or
were rejected.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gradprobe.extras import require

require("harness", "hydra", "omegaconf", "torchvision", command="python -m ablations.train")

import hydra  # noqa: E402 - after the check above
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.errors import HydraException  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from omegaconf.errors import OmegaConfBaseException  # noqa: E402

from ablations import configs  # noqa: E402
from ablations.callbacks import ExitStatus  # noqa: E402
from ablations.isolate import needs_child, run_in_child  # noqa: E402
from ablations.preflight import one_line  # noqa: E402
from ablations.run import REJECTIONS, run_job  # noqa: E402

configs.register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def train(cfg: DictConfig) -> str:
    """Hydra task: one job of the sweep (or the single run)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    job_num = hc.job.num if hc.mode == RunMode.MULTIRUN else 0
    if needs_child(cfg):  # trainer.exact on CPU: portable numerics need a fresh process
        log_file = run_dir / f"{hc.job.name}.log"
        status = run_in_child(cfg, run_dir, run_dir.parent, job_num, log_file)
    else:
        status = run_job(cfg, run_dir, run_dir.parent, job_num=job_num)
    if status == "rejected":
        ExitStatus.rejected.setdefault(run_dir.name, REJECTIONS[run_dir.name])
    elif status == "skipped":
        ExitStatus.skipped.append(run_dir.name)
    return status


@contextmanager
def hydra_errors() -> Iterator[None]:
    """Hydra's errors as one line on stderr and exit status 1, instead of its several lines.

    Hydra raises its errors to the caller when ``HYDRA_FULL_ERROR=1`` (else it prints them itself
    and exits); it is set while the app runs so that `ablations.preflight.one_line` can say them.
    A user who sets ``HYDRA_FULL_ERROR=1`` gets Hydra's full traceback, as Hydra documents.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(1)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)


def main() -> None:
    """Run the Hydra app; exit with status 1 when a run of this invocation failed or was rejected."""
    with hydra_errors():
        train()
    notes, lines = ExitStatus.notes(), ExitStatus.summary()
    if notes:
        print(*notes, sep="\n", file=sys.stderr)
    if lines:
        print(*lines, sep="\n", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
