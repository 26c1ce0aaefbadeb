"""The registry of dataset loaders: ``dataset.loader`` names one, `build_dataset` calls it.

A loader that reads files also registers a presence check (`register_check`), which
`check_dataset` runs before anything is built: it looks for the folders the loader will read
without reading them, and raises the loader's own `DataNotFoundError`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from ablations.data.splits import LoaderData, TensorData
from gradprobe.registry import Registry

DATASETS: Registry[Callable[..., TensorData | LoaderData]] = Registry("dataset loader")
_CHECKS: dict[str, Callable[[DictConfig], None]] = {}


def register_check(loader: str) -> Callable:
    """Decorator registering ``fn(cfg)``, which raises `DataNotFoundError` when the data of
    loader ``loader`` is neither on disk nor downloadable (cheap: no file is read)."""

    def wrap(fn: Callable[[DictConfig], None]) -> Callable[[DictConfig], None]:
        _CHECKS[loader] = fn
        return fn

    return wrap


def check_dataset(cfg: DictConfig) -> None:
    """Raise `DataNotFoundError` when the dataset ``cfg`` (the ``dataset`` group) names is not
    where it says and will not be downloaded; datasets in memory (digits, synthetic) pass."""
    check = _CHECKS.get(str(cfg.loader))
    if check is not None:
        check(cfg)


def build_dataset(
    cfg: DictConfig,
    *,
    device: torch.device,
    seed: int,
    frames: int | None = None,
    num_workers: int = 0,
) -> TensorData | LoaderData:
    """Build the dataset that ``cfg`` (the ``dataset`` group) names.

    Args:
        cfg: The ``dataset`` config node; ``cfg.loader`` picks the loader.
        device: Training device (in-memory splits are placed there).
        seed: Run seed (data order).
        frames: Frames per event sample when ``cfg.frames`` is null (the model's T).
        num_workers: DataLoader workers for file-based data.

    Returns:
        A `TensorData` or `LoaderData`.

    Example:
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({"loader": "digits", "img_size": 16, "in_channels": 3,
        ...                         "mean": [0.2] * 3, "std": [0.3] * 3})
        >>> data = build_dataset(cfg, device=torch.device("cpu"), seed=0)
        >>> data.train_size, data.test_size
        (1437, 360)
    """
    loader = DATASETS.get(cfg.loader)
    return loader(cfg, device=device, seed=seed, frames=frames, num_workers=num_workers)


def list_datasets() -> list[str]:
    """Names of the registered dataset loaders (the values ``dataset.loader`` accepts)."""
    return DATASETS.names()
