"""Fixtures shared by the test modules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode


class ZerosMade(TorchDispatchMode):
    """Records ``(op, shape, dtype)`` of every ``aten.zeros``/``aten.zeros_like`` result while
    active, including those made inside the autograd engine (e.g. materialised gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[tuple[str, tuple[int, ...], torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("zeros", "zeros_like"):
            self.made.append((name, tuple(out.shape), out.dtype))
        return out


@pytest.fixture
def zeros_made() -> type[ZerosMade]:
    """`ZerosMade`, to use as ``with zeros_made() as seen: ...``."""
    return ZerosMade


@pytest.fixture
def broken_kernels(monkeypatch: pytest.MonkeyPatch):
    """``broken_kernels(module)`` gives ``module._KERNELS`` (a `gradprobe.fast.kernels.KernelSet`)
    a copy whose every compiled kernel raises, as a broken toolchain would; returns the copy."""

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler in this test")

    def install(module):
        kernels = copy.copy(module._KERNELS)
        kernels.compiled = dict.fromkeys(kernels.eager, broken)
        kernels.broken = []
        monkeypatch.setattr(module, "_KERNELS", kernels)
        return kernels

    return install


@pytest.fixture
def dataset_cfg():
    """``dataset_cfg(option, **changes)``: the ``dataset`` group option as the harness composes
    it (its parent options first), with ``changes`` merged in."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import ablations.configs  # noqa: F401  (registers the model group)

    def make(option: str, **changes):
        with initialize_config_module("ablations.conf", version_base="1.3"):
            cfg = compose("config", overrides=[f"dataset={option}"])
        return OmegaConf.merge(cfg.dataset, changes)

    return make
