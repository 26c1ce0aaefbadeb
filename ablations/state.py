"""What a run carries from epoch to epoch and across a resume: the checkpoint and the RNGs.

Resuming is exact: the checkpoint written after every epoch holds the model, optimiser,
scheduler and scaler states, the history, and the torch / CUDA / numpy / ``random`` generator
states; the data order of each epoch comes from its own seeded generator. On CPU a resumed run
therefore ends with the same numbers as one that was never interrupted.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ablations.build import Parts


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Progress:
    """How far a run is: epochs done, their history rows and probe rows, and its training time
    (``wall_before`` from earlier attempts plus this one's since ``started``)."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    probe_rows: list[dict] = field(default_factory=list)
    wall_before: float = 0.0
    started: float = field(default_factory=time.time)

    def wall_time_s(self) -> float:
        return self.wall_before + time.time() - self.started

    def final(self) -> dict:
        """The final numbers of the run document (``final``) and of ``summary.json``."""
        last = self.history[-1] if self.history else {}
        return {
            "test_top1": last.get("test_top1"),
            "best_test_top1": max((h["test_top1"] for h in self.history), default=None),
            "test_top5": last.get("test_top5"),
            "test_loss": last.get("test_loss"),
            "epochs_done": len(self.history),
            "wall_time_s": self.wall_time_s(),
        }


def checkpoint(parts: Parts, progress: Progress) -> dict:
    """Everything `resume` needs to continue after ``progress.epoch``."""
    return {
        "epoch": progress.epoch,
        "model": parts.backbone.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng": rng_state(),
        "history": progress.history,
        "probe": progress.probe_rows,
        "wall_time_s": progress.wall_time_s(),
    }


def resume(state: dict | None, parts: Parts) -> Progress:
    """Load a `checkpoint` into ``parts`` (``None``: a fresh start) and return its progress."""
    progress = Progress()
    if state is not None:
        parts.backbone.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty from a run without loss scaling: start a fresh scale
            parts.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        progress = Progress(state["epoch"], state["history"], state["probe"], state["wall_time_s"])
    if parts.graph is None:  # a checkpoint of a graphed run on CUDA resumes anywhere, eagerly
        for group in parts.optimizer.param_groups:
            if group.get("capturable"):
                group["capturable"] = False
    return progress
