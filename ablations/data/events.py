"""Event-camera datasets through spikingjelly: CIFAR10-DVS and DVS128 Gesture as frames
``[T, 2, 128, 128]`` (per-polarity event counts), read by DataLoader workers."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset, Subset

from ablations.data.augment import SNNAugmentWide
from ablations.data.registry import DATASETS, register_check
from ablations.data.splits import LoaderData, limit_dataset
from gradprobe.data import DataNotFoundError


class _Transformed(Dataset):
    """A dataset whose samples go through ``transform`` (event frames → augmented tensors)."""

    def __init__(self, base: Dataset, transform: Callable | None) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[index]
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        return (self.transform(x) if self.transform else x), int(y)


def _dvs_hint(cls, root: Path) -> str:
    from spikingjelly.datasets import CIFAR10DVS

    if cls is CIFAR10DVS:
        return (
            f"CIFAR10-DVS not found in {root}: run with dataset.download=true (spikingjelly fetches "
            f"the 10 class archives from figshare into {root}/download/), or put them there "
            f"yourself, or put the extracted .aedat class folders in {root}/extract/<class>/."
        )
    return (
        f"DVS128 Gesture not found in {root}: download DvsGesture.tar.gz (plus gesture_mapping.csv, "
        f"LICENSE.txt, README.txt) from https://ibm.ent.box.com/s/3hiq58ww1pbbjrinh367ykfdf60xsfm8 "
        f"into {root}/download/, or extract the archive so that {root}/extract/DvsGesture/ exists."
    )


def prepare_dvs_events(cls, root: Path, download: bool) -> None:
    """Make sure spikingjelly's raw event folder ``root/events_np`` exists.

    spikingjelly converts ``root/download`` archives → ``root/extract`` → ``root/events_np``, but it
    always starts from the download step. An ``extract`` folder the user provides is converted
    here directly (into a temporary folder renamed on success). Without any of the three, the
    archive is downloaded only when the dataset allows it and ``download`` is true.
    """
    raw, extract = check_dvs_events(cls, root, download)
    if raw.is_dir():
        return
    if extract.is_dir():
        partial = root / "events_np.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        cls.create_raw_from_extracted(extract, partial)
        partial.rename(raw)
        return
    root.mkdir(parents=True, exist_ok=True)  # spikingjelly checks (or downloads) the archives


def check_dvs_events(cls, root: Path, download: bool) -> tuple[Path, Path]:
    """Raise `DataNotFoundError` unless ``root`` holds ``events_np``, ``extract`` or
    ``download`` (or the archives may be downloaded); returns the first two folders."""
    raw, extract, archives = root / "events_np", root / "extract", root / "download"
    marker = raw.with_name("events_np.building")
    if marker.exists():
        raise DataNotFoundError(
            f"an earlier preparation of {root} stopped half-way: delete {marker} and "
            f"{raw} (if present) and run again. {_dvs_hint(cls, root)}"
        )
    if raw.is_dir() or extract.is_dir() or archives.is_dir() or (download and cls.downloadable()):
        return raw, extract
    raise DataNotFoundError(_dvs_hint(cls, root))


def _event_frames(cls, cfg: DictConfig, frames: int | None, **split) -> Dataset:
    root = Path(cfg.root)
    prepare_dvs_events(cls, root, bool(cfg.download))
    count = int(cfg.frames if cfg.get("frames") is not None else frames)
    try:
        return cls(
            str(root), data_type="frame", frames_number=count, split_by=cfg.split_by, **split
        )
    except OSError as err:
        raise DataNotFoundError(f"{_dvs_hint(cls, root)} ({err})") from err


def per_class_split(targets: list[int], train_ratio: float) -> tuple[list[int], list[int]]:
    """The first ``ceil(n * train_ratio)`` indices of each class train, the rest test.

    This is spikingjelly's ``split_to_train_test_set(random_split=False)``, which the reference
    DVS scripts call, computed from the folder's labels instead of by loading every sample (the
    slow part that spikingjelly issue #208 asks to cache: nothing here needs caching).

    Example:
        >>> per_class_split([0, 0, 1, 1, 0, 1], 0.5)
        ([0, 1, 2, 3], [4, 5])
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(int(label), []).append(index)
    train, test = [], []
    for label in sorted(by_class):
        indices = by_class[label]
        cut = math.ceil(len(indices) * train_ratio)
        train += indices[:cut]
        test += indices[cut:]
    return train, test


def _dvs_data(
    train: Dataset, test: Dataset, cfg: DictConfig, device, seed, num_workers
) -> LoaderData:
    aug = cfg.get("augment") or {}
    transform = SNNAugmentWide(
        hflip=aug.get("hflip", 0.0), wide=bool(aug.get("snn_augment_wide", False))
    )
    train = limit_dataset(_Transformed(train, transform), cfg.get("limit_train"))
    test = limit_dataset(_Transformed(test, None), cfg.get("limit_test"))
    return LoaderData(train, test, num_workers, seed, device)


@register_check("cifar10_dvs")
def _cifar10_dvs_present(cfg: DictConfig) -> None:
    from spikingjelly.datasets import CIFAR10DVS

    check_dvs_events(CIFAR10DVS, Path(cfg.root), bool(cfg.download))


@register_check("dvs128_gesture")
def _dvs128_gesture_present(cfg: DictConfig) -> None:
    from spikingjelly.datasets import DVS128Gesture

    check_dvs_events(DVS128Gesture, Path(cfg.root), bool(cfg.download))


@DATASETS.register("cifar10_dvs")
def _cifar10_dvs(cfg: DictConfig, *, device, seed, frames=None, num_workers=0, **_) -> LoaderData:
    from spikingjelly.datasets import CIFAR10DVS

    full = _event_frames(CIFAR10DVS, cfg, frames)
    train_idx, test_idx = per_class_split(full.targets, float(cfg.train_ratio))
    return _dvs_data(
        Subset(full, train_idx), Subset(full, test_idx), cfg, device, seed, num_workers
    )


@DATASETS.register("dvs128_gesture")
def _dvs128_gesture(
    cfg: DictConfig, *, device, seed, frames=None, num_workers=0, **_
) -> LoaderData:
    from spikingjelly.datasets import DVS128Gesture

    train = _event_frames(DVS128Gesture, cfg, frames, train=True)
    test = _event_frames(DVS128Gesture, cfg, frames, train=False)
    return _dvs_data(train, test, cfg, device, seed, num_workers)
