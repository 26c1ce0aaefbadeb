"""Static image datasets: the embedded digits, synthetic test images, CIFAR-10/100 through
torchvision (with its download), and ImageFolder trees (small ones such as the JPEG CIFAR-10
decoded into memory, ImageNet-sized ones decoded per batch by DataLoader workers)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ablations.data.augment import loader_transforms
from ablations.data.registry import DATASETS, register_check
from ablations.data.splits import SUBSET_SEED, Batch, LoaderData, TensorData, limit_dataset
from gradprobe.data import DataNotFoundError, load_digits, load_image_folder


@DATASETS.register("digits")
def _digits(cfg: DictConfig, *, device, seed, **_) -> TensorData:
    size, channels = int(cfg.img_size), int(cfg.in_channels)
    return TensorData.from_splits(
        cfg, load_digits(True, size, channels), load_digits(False, size, channels), device, seed
    )


def synthetic_images(n: int, num_classes: int, size: int, channels: int, seed: int) -> Batch:
    """Noise images with a bright square whose grid position is the class (tests only).

    Returns:
        uint8 images ``[n, channels, size, size]`` and int64 labels ``[n]``.

    Example:
        >>> images, labels = synthetic_images(8, 4, 16, 3, seed=0)
        >>> images.shape, images.dtype, labels.shape
        (torch.Size([8, 3, 16, 16]), torch.uint8, torch.Size([8]))
    """
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=generator)
    images = torch.rand(n, channels, size, size, generator=generator) * 0.5
    side = max(1, math.ceil(math.sqrt(num_classes)))
    cell = size // side
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, side)
        images[i, :, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] += 0.5
    return (images * 255).round().to(torch.uint8), labels


@DATASETS.register("synthetic")
def _synthetic(cfg: DictConfig, *, device, seed, **_) -> TensorData:
    shape = (int(cfg.num_classes), int(cfg.img_size), int(cfg.in_channels))
    train = synthetic_images(int(cfg.train_size), *shape, seed=1)
    test = synthetic_images(int(cfg.test_size), *shape, seed=2)
    return TensorData.from_splits(cfg, train, test, device, seed)


def _cifar_missing(cls, cfg: DictConfig) -> str:
    root = Path(cfg.root)
    return f"{cls.__name__} not found: expected {root / cls.base_folder}/ (the python version)."


def _torchvision_cifar(cls, cfg: DictConfig) -> tuple[Batch, Batch]:
    root, url = Path(cfg.root), cls.url
    where = _cifar_missing(cls, cfg)
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=bool(cfg.download))
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise DataNotFoundError(
                f"{where} Run with dataset.download=true to fetch {url}, or extract that archive into {root}/."
            ) from err
        except OSError as err:  # no network, refused connection, ...
            raise DataNotFoundError(
                f"{where} Downloading {url} failed ({err}): fetch it elsewhere and extract it into {root}/."
            ) from err
        images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        splits.append((images, torch.as_tensor(ds.targets, dtype=torch.int64)))
    return splits[0], splits[1]


def _check_cifar(cls, cfg: DictConfig) -> None:
    """The archive's folder is there, or ``dataset.download`` will fetch it."""
    root = Path(cfg.root)
    if not cfg.download and not (root / cls.base_folder).is_dir():
        raise DataNotFoundError(
            f"{_cifar_missing(cls, cfg)} Run with dataset.download=true to fetch {cls.url}, or "
            f"extract that archive into {root}/ (or set dataset.root / paths.data)."
        )


@register_check("cifar10")
def _cifar10_present(cfg: DictConfig) -> None:
    from torchvision.datasets import CIFAR10

    _check_cifar(CIFAR10, cfg)


@register_check("cifar100")
def _cifar100_present(cfg: DictConfig) -> None:
    from torchvision.datasets import CIFAR100

    _check_cifar(CIFAR100, cfg)


@DATASETS.register("cifar10")
def _cifar10(cfg: DictConfig, *, device, seed, **_) -> TensorData:
    from torchvision.datasets import CIFAR10

    return TensorData.from_splits(cfg, *_torchvision_cifar(CIFAR10, cfg), device, seed)


@DATASETS.register("cifar100")
def _cifar100(cfg: DictConfig, *, device, seed, **_) -> TensorData:
    from torchvision.datasets import CIFAR100

    return TensorData.from_splits(cfg, *_torchvision_cifar(CIFAR100, cfg), device, seed)


@register_check("image_folder")
def _split_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    """The train and test folders under ``dataset.root``; each must hold a class folder."""
    root = Path(cfg.root)
    train_dir, test_dir = root / cfg.train_dir, root / cfg.test_dir
    for folder in (train_dir, test_dir):
        if not folder.is_dir():
            raise DataNotFoundError(
                f"image folder {folder} not found: put the dataset under {root}/ as "
                f"{cfg.train_dir}/<class>/<image> and {cfg.test_dir}/<class>/<image> "
                f"(or set dataset.root / paths.data)"
            )
        if not any(p.is_dir() for p in folder.iterdir()):
            raise DataNotFoundError(
                f"image folder {folder} has no class folders: expected {folder}/<class>/<image>"
            )
    return train_dir, test_dir


@DATASETS.register("image_folder")
def _image_folder(cfg: DictConfig, *, device, seed, num_workers=0, **_) -> TensorData | LoaderData:
    train_dir, test_dir = _split_dirs(cfg)
    size = int(cfg.img_size)
    if cfg.get("in_memory", False):
        x_tr, y_tr, classes = load_image_folder(
            train_dir, limit=cfg.get("limit_train"), size=size, seed=SUBSET_SEED
        )
        x_te, y_te, test_classes = load_image_folder(
            test_dir, limit=cfg.get("limit_test"), size=size, seed=SUBSET_SEED
        )
        if classes != test_classes:
            raise DataNotFoundError(f"{train_dir} and {test_dir} hold different class folders")
        return TensorData.from_splits(cfg, (x_tr, y_tr), (x_te, y_te), device, seed, subset=False)

    from torchvision.datasets import ImageFolder

    train_tf, test_tf = loader_transforms(size, cfg.augment, cfg.mean, cfg.std)
    train_set = ImageFolder(str(train_dir), transform=train_tf)
    test_set = ImageFolder(str(test_dir), transform=test_tf)
    return LoaderData(
        limit_dataset(train_set, cfg.get("limit_train")),
        limit_dataset(test_set, cfg.get("limit_test")),
        num_workers,
        seed,
        device,
    )
