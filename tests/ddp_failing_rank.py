"""``python -m ablations.train`` whose rank 1 raises in its second epoch (tests/test_distributed.py).

Run by torchrun: ``torchrun --nproc_per_node=2 tests/ddp_failing_rank.py trainer.ddp=true ...``.
Rank 0 trains normally and learns of the failure only through the process group.
"""

from ablations import loop
from ablations.train import main

train_one_epoch = loop.train_one_epoch


def failing_on_rank_1(parts, step, epoch, tcfg, dist):
    if dist.rank == 1 and epoch == 1:
        raise RuntimeError("injected failure on rank 1")
    return train_one_epoch(parts, step, epoch, tcfg, dist)


loop.train_one_epoch = failing_on_rank_1

if __name__ == "__main__":
    main()
