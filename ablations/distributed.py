"""DistributedDataParallel behind one switch, ``trainer.ddp=true``; rank 0 does all the writing.

Two ways to start the processes, nothing else to configure:

- one machine: ``torchrun --nproc_per_node=8 -m ablations.train trainer.ddp=true ...``
  (torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
- Slurm: ``launcher=slurm hydra.launcher.tasks_per_node=8 hydra.launcher.gpus_per_node=8
  trainer.ddp=true``; every Slurm task runs the job and submitit supplies the same variables.

Every rank trains on its own slice of each epoch's shuffled order and evaluates its own slice of
the test set; sums are all-reduced, so the numbers are those of the global batch. With
``trainer.ddp=false`` (the default) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from omegaconf import DictConfig
from torch import nn

from ablations.checks import ConfigError


@dataclass
class Dist:
    """This process's place in the job: ``rank`` of ``world``, GPU ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Dist:
        """Join the process group when ``cfg.ddp`` is true (the ``trainer`` group)."""
        if not cfg.ddp:
            return cls()
        if "RANK" not in os.environ and "SLURM_PROCID" in os.environ:
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export()
        if "RANK" not in os.environ:
            raise ConfigError(
                "trainer.ddp=true needs processes started by torchrun or Slurm tasks (no RANK in "
                "the environment); choices: torchrun --nproc_per_node=N -m ablations.train ..., "
                "launcher=slurm with hydra.launcher.tasks_per_node=N"
            )
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend=backend)
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), local_rank, True)

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` on ``device``, inside DistributedDataParallel when there are several ranks."""
        module = module.to(device)
        if self.world == 1:
            return module
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over all ranks (itself with one rank)."""
        if self.world > 1:
            tensor = tensor.clone()
            torch_dist.all_reduce(tensor)
        return tensor

    def close(self) -> None:
        if self.initialized and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()
