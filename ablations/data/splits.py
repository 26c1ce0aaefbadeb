"""Train and test splits behind one interface, in memory (`TensorData`) or read by workers
(`LoaderData`).

Data order comes from a generator seeded by ``(seed, epoch)``, so an epoch's batches do not
depend on what ran before it (a resumed run sees the same batches). Subsets (``limit_train`` /
``limit_test``) are drawn with one fixed seed, so every run seed trains on the same images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from ablations.data.augment import TensorAugment

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


def limit_dataset(dataset: Dataset, limit: int | None) -> Dataset:
    """``dataset`` cut to the fixed subset of `subset_indices` (itself when nothing is cut)."""
    keep = subset_indices(len(dataset), limit)
    return dataset if keep is None else Subset(dataset, keep.tolist())


class Splits:
    """What both data sources share: split sizes, full training batches per epoch over ranks."""

    #: The fields whose lengths are the train and test sizes.
    sized_by: ClassVar[tuple[str, str]]

    @property
    def train_size(self) -> int:
        return len(getattr(self, self.sized_by[0]))

    @property
    def test_size(self) -> int:
        return len(getattr(self, self.sized_by[1]))

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        return self.train_size // (batch_size * world)


@dataclass
class TensorData(Splits):
    """Both splits in memory; ``images`` are uint8 ``[N, C, H, W]`` on ``device``.

    Attributes:
        train_images, train_labels, test_images, test_labels: The splits.
        augment: Turns a uint8 batch into a normalised float batch (augmenting when training).
        seed: Run seed (data order).
    """

    sized_by: ClassVar[tuple[str, str]] = ("train_labels", "test_labels")

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    augment: TensorAugment
    seed: int

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
            img_size=min(x_tr.shape[-2:]),
            # the reference CIFAR recipe resamples bicubic (its --interpolation)
            interpolation=aug.get("interpolation", "bicubic"),
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
class LoaderData(Splits):
    """Both splits as map-style datasets read by DataLoader workers.

    Attributes:
        train_set, test_set: Datasets returning ``(float tensor, int label)``.
        num_workers: Worker processes per loader.
        seed: Run seed (data order and worker seeds).
        device: Where batches are moved.
    """

    sized_by: ClassVar[tuple[str, str]] = ("train_set", "test_set")

    train_set: Dataset
    test_set: Dataset
    num_workers: int
    seed: int
    device: torch.device

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
