"""``python -m ablations.train``: train one run, or a sweep of them with ``-m``.

Examples::

    python -m ablations.train -m experiment=quickstart          # 4 variants, digits, CPU, minutes
    python -m ablations.train -m downsample=lif_maxpool,maxpool_lif,avgpool_lif,strided_conv \\
        model=spikformer_4_384_cifar,spikingformer_4_384_cifar dataset=cifar10 seed=0,1,2
    python -m ablations.train -m experiment=paper_table1_cifar10 launcher=slurm

Each job writes ``<paths.sweeps>/<experiment_name>/<run_id>/`` (``run_id`` spells the job's
overrides) and its document in ``<paths.sweeps>/<experiment_name>/results/``. Running the same
command again skips finished runs and resumes interrupted ones. A job that fails is recorded as
failed and the sweep goes on; the command then exits with status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ablations import configs
from ablations.callbacks import ExitStatus
from ablations.run import run_job

configs.register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def train(cfg: DictConfig) -> str:
    """Hydra task: one job of the sweep (or the single run)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    job_num = hc.job.num if hc.mode == RunMode.MULTIRUN else 0
    return run_job(cfg, run_dir, run_dir.parent, job_num=job_num)


def main() -> None:
    """Run the Hydra app; exit with status 1 when a run of this invocation failed."""
    train()
    if ExitStatus.failed:
        print(
            f"{len(ExitStatus.failed)} run(s) failed:",
            *ExitStatus.failed,
            sep="\n  ",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
