"""The harness's datasets behind one registry: ``dataset.loader`` picks the loader by name.

Two shapes of data, one interface (`TensorData`, `LoaderData`):

- **In memory** (CIFAR-10/100, small ImageFolder trees such as cifar10-jpeg, the embedded
  digits, the synthetic test set): each split is one uint8 tensor ``[N, C, H, W]`` on the
  training device, batches are gathered by index and augmented there (`TensorAugment`), so the
  data path never limits a step.
- **Files** (ImageNet-sized ImageFolder trees, CIFAR10-DVS, DVS128 Gesture): a DataLoader with
  workers decodes samples; event samples are ``[T, 2, 128, 128]`` frames.

Data order comes from a generator seeded by ``(seed, epoch)``, so an epoch's batches do not
depend on what ran before it (a resumed run sees the same batches). A dataset that is missing
raises `DataNotFoundError` with one message that says where to put it or how to fetch it.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from ablations.augment import SNNAugmentWide, TensorAugment
from gradprobe.data import DataNotFoundError, load_digits, load_image_folder
from gradprobe.registry import Registry

DATASETS: Registry[Callable[..., TensorData | LoaderData]] = Registry("dataset loader")
SUBSET_SEED = 0  # subsets (limit_train/limit_test) are the same for every run seed

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator that orders epoch ``epoch`` of a run seeded ``seed``."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def subset_indices(n: int, limit: int | None) -> torch.Tensor | None:
    """Sorted indices of a fixed random subset of ``limit`` out of ``n`` (``None``: keep all)."""
    if limit is None or limit >= n:
        return None
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(n, generator=generator)[: int(limit)].sort().values


class _Splits:
    """What both data sources share: full training batches per epoch, split over ranks."""

    train_size: int

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        return self.train_size // (batch_size * world)


@dataclass
class TensorData(_Splits):
    """Both splits in memory; ``images`` are uint8 ``[N, C, H, W]`` on ``device``.

    Attributes:
        train_images, train_labels, test_images, test_labels: The splits.
        augment: Turns a uint8 batch into a normalised float batch (augmenting when training).
        seed: Run seed (data order).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    augment: TensorAugment
    seed: int

    @property
    def train_size(self) -> int:
        return len(self.train_labels)

    @property
    def test_size(self) -> int:
        return len(self.test_labels)

    def train_batches(
        self, epoch: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> Iterator[Batch]:
        """Shuffled, augmented full batches; rank r of ``world`` takes every world-th batch slot."""
        order = torch.randperm(self.train_size, generator=epoch_generator(self.seed, epoch))
        for step in range(self.steps_per_epoch(batch_size, world)):
            start = (step * world + rank) * batch_size
            index = order[start : start + batch_size].to(self.train_images.device)
            yield self.augment(self.train_images[index], train=True), self.train_labels[index]

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """Every test image exactly once over all ranks, normalised, in order."""
        for start in range(rank * batch_size, self.test_size, batch_size * world):
            images = self.test_images[start : start + batch_size]
            yield self.augment(images, train=False), self.test_labels[start : start + batch_size]

    @classmethod
    def from_splits(
        cls,
        cfg: DictConfig,
        train: Batch,
        test: Batch,
        device: torch.device,
        seed: int,
        subset: bool = True,
    ) -> TensorData:
        """Wrap decoded splits, keeping the configured subsets (``subset=False``: already done)."""
        (x_tr, y_tr), (x_te, y_te) = train, test
        keep_tr = subset_indices(len(y_tr), cfg.get("limit_train")) if subset else None
        keep_te = subset_indices(len(y_te), cfg.get("limit_test")) if subset else None
        if keep_tr is not None:
            x_tr, y_tr = x_tr[keep_tr], y_tr[keep_tr]
        if keep_te is not None:
            x_te, y_te = x_te[keep_te], y_te[keep_te]
        aug = cfg.get("augment") or {}
        augment = TensorAugment(
            cfg.mean,
            cfg.std,
            hflip=aug.get("hflip", 0.0),
            randaugment=aug.get("randaugment"),
            random_erasing=aug.get("random_erasing", 0.0),
        )
        return cls(
            x_tr.contiguous().to(device),
            y_tr.to(device),
            x_te.contiguous().to(device),
            y_te.to(device),
            augment,
            seed,
        )


@dataclass
class LoaderData(_Splits):
    """Both splits as map-style datasets read by DataLoader workers.

    Attributes:
        train_set, test_set: Datasets returning ``(float tensor, int label)``.
        num_workers: Worker processes per loader.
        seed: Run seed (data order and worker seeds).
        device: Where batches are moved.
    """

    train_set: Dataset
    test_set: Dataset
    num_workers: int
    seed: int
    device: torch.device

    @property
    def train_size(self) -> int:
        return len(self.train_set)

    @property
    def test_size(self) -> int:
        return len(self.test_set)

    def _load(
        self, dataset: Dataset, batch_size: int, sampler, generator, drop_last: bool
    ) -> Iterator[Batch]:
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            generator=generator,
            drop_last=drop_last,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(
        self, epoch: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> Iterator[Batch]:
        generator = epoch_generator(self.seed, epoch)
        if world > 1:
            sampler = DistributedSampler(
                self.train_set, world, rank, shuffle=True, seed=self.seed, drop_last=True
            )
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(self.train_set, generator=generator)
        return self._load(self.train_set, batch_size, sampler, generator, drop_last=True)

    def test_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        indices = list(range(rank, self.test_size, world))
        return self._load(
            Subset(self.test_set, indices), batch_size, None, epoch_generator(self.seed, 0), False
        )


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


def _limit(dataset: Dataset, limit: int | None) -> Dataset:
    keep = subset_indices(len(dataset), limit)
    return dataset if keep is None else Subset(dataset, keep.tolist())


def build_dataset(
    cfg: DictConfig,
    *,
    device: torch.device,
    seed: int,
    frames: int | None = None,
    num_workers: int = 0,
):
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


@DATASETS.register("digits")
def _digits(cfg: DictConfig, *, device, seed, **_) -> TensorData:
    size, channels = int(cfg.img_size), int(cfg.in_channels)
    return TensorData.from_splits(
        cfg, load_digits(True, size, channels), load_digits(False, size, channels), device, seed
    )


def synthetic_images(n: int, num_classes: int, size: int, channels: int, seed: int) -> Batch:
    """Noise images with a bright square whose grid position is the class (tests only)."""
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


def _torchvision_cifar(cls, cfg: DictConfig, folder: str, url: str) -> tuple[Batch, Batch]:
    root = Path(cfg.root)
    where = f"{cls.__name__} not found: expected {root / folder}/ (the python version)."
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


@DATASETS.register("cifar10")
def _cifar10(cfg: DictConfig, *, device, seed, **_) -> TensorData:
    from torchvision.datasets import CIFAR10

    train, test = _torchvision_cifar(CIFAR10, cfg, CIFAR10.base_folder, CIFAR10.url)
    return TensorData.from_splits(cfg, train, test, device, seed)


@DATASETS.register("cifar100")
def _cifar100(cfg: DictConfig, *, device, seed, **_) -> TensorData:
    from torchvision.datasets import CIFAR100

    train, test = _torchvision_cifar(CIFAR100, cfg, CIFAR100.base_folder, CIFAR100.url)
    return TensorData.from_splits(cfg, train, test, device, seed)


def _split_dirs(cfg: DictConfig) -> tuple[Path, Path]:
    root = Path(cfg.root)
    train_dir, test_dir = root / cfg.train_dir, root / cfg.test_dir
    for folder in (train_dir, test_dir):
        if not folder.is_dir():
            raise DataNotFoundError(
                f"image folder {folder} not found: put the dataset under {root}/ as "
                f"{cfg.train_dir}/<class>/<image> and {cfg.test_dir}/<class>/<image> "
                f"(or set dataset.root / paths.data)"
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

    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    aug = cfg.augment
    train_tf = create_transform(
        size,
        is_training=True,
        scale=tuple(aug.scale),
        ratio=tuple(aug.ratio),
        hflip=aug.hflip,
        color_jitter=0.0,
        auto_augment=aug.randaugment,
        interpolation=aug.interpolation,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        re_prob=aug.random_erasing,
        re_mode="const",
        re_count=1,
    )
    keep_posterize_zero_bits(train_tf)
    test_tf = create_transform(
        size,
        is_training=False,
        interpolation=aug.interpolation,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        crop_pct=aug.crop_pct,
    )
    train_set = _limit(ImageFolder(str(train_dir), transform=train_tf), cfg.get("limit_train"))
    test_set = _limit(ImageFolder(str(test_dir), transform=test_tf), cfg.get("limit_test"))
    return LoaderData(train_set, test_set, num_workers, seed, device)


def _posterize(img, bits_to_keep, **kwargs):
    """timm's posterize, where keeping 0 bits gives a black image as Pillow < 11 did (newer
    Pillow raises for 0 bits, which RandAugment's ``inc1`` ops reach near magnitude 10)."""
    from PIL import Image
    from timm.data.auto_augment import posterize

    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


def keep_posterize_zero_bits(transform) -> int:
    """Give every posterize op of timm's RandAugment in ``transform`` (a torchvision
    ``Compose``) `_posterize`; returns how many ops were changed."""
    count = 0
    for step in getattr(transform, "transforms", ()):
        for op in getattr(step, "ops", ()):
            if op.name.startswith("Posterize"):
                op.aug_fn = _posterize
                count += 1
    return count


# --- event cameras through spikingjelly -------------------------------------------------------


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
    raw, extract, archives = root / "events_np", root / "extract", root / "download"
    marker = raw.with_name("events_np.building")
    if marker.exists():
        raise DataNotFoundError(
            f"an earlier preparation of {root} stopped half-way: delete {marker} and "
            f"{raw} (if present) and run again. {_dvs_hint(cls, root)}"
        )
    if raw.is_dir():
        return
    if extract.is_dir():
        partial = root / "events_np.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        cls.create_raw_from_extracted(extract, partial)
        partial.rename(raw)
        return
    if archives.is_dir() or (download and cls.downloadable()):
        root.mkdir(parents=True, exist_ok=True)
        return  # spikingjelly checks (or downloads) the archives itself
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
    train = _limit(_Transformed(train, transform), cfg.get("limit_train"))
    test = _limit(_Transformed(test, None), cfg.get("limit_test"))
    return LoaderData(train, test, num_workers, seed, device)


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


def list_datasets() -> list[str]:
    """Names of the registered dataset loaders (the values ``dataset.loader`` accepts)."""
    return DATASETS.names()
