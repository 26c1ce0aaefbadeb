"""The registry of dataset loaders: ``dataset.loader`` names one, `build_dataset` calls it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from ablations.data.splits import LoaderData, TensorData
from gradprobe.registry import Registry

DATASETS: Registry[Callable[..., TensorData | LoaderData]] = Registry("dataset loader")


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
