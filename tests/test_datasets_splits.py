"""ablations.data.splits: seeded data order, fixed subsets, both splits over ranks."""

import torch
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset

from ablations.data import LoaderData, TensorData, synthetic_images
from ablations.data.splits import limit_dataset, subset_indices

CPU = torch.device("cpu")
CFG = OmegaConf.create({"mean": [0.5] * 3, "std": [0.5] * 3, "limit_train": None})


def tensor_data(seed: int = 0) -> TensorData:
    train, test = synthetic_images(128, 4, 16, 3, seed=1), synthetic_images(64, 4, 16, 3, seed=2)
    return TensorData.from_splits(CFG, train, test, CPU, seed)


def test_epoch_order_depends_only_on_seed_and_epoch():
    data = tensor_data()
    first = [y for _, y in data.train_batches(epoch=3, batch_size=16)]
    torch.rand(100)  # unrelated draws do not change the order
    again = [y for _, y in data.train_batches(epoch=3, batch_size=16)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = [y for _, y in data.train_batches(epoch=4, batch_size=16)]
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    shards = [torch.cat([y for _, y in data.test_batches(16, rank=r, world=2)]) for r in range(2)]
    assert sum(len(s) for s in shards) == data.test_size


def test_subsets_are_fixed_and_sorted():
    assert subset_indices(10, None) is None
    keep = subset_indices(100, 7)
    assert torch.equal(keep, subset_indices(100, 7)) and torch.equal(keep, keep.sort().values)
    data = TensorData.from_splits(
        OmegaConf.merge(CFG, {"limit_train": 7, "limit_test": 5}),
        synthetic_images(100, 4, 16, 3, seed=1),
        synthetic_images(10, 4, 16, 3, seed=2),
        CPU,
        seed=0,
    )
    assert (data.train_size, data.test_size) == (7, 5)
    assert torch.equal(data.train_labels, synthetic_images(100, 4, 16, 3, seed=1)[1][keep])


def test_loader_data_reads_every_test_sample_once_and_full_train_batches():
    x, y = torch.rand(50, 3, 4, 4), torch.arange(50)
    data = LoaderData(
        limit_dataset(TensorDataset(x, y), 30), TensorDataset(x, y), 0, seed=0, device=CPU
    )
    assert (data.train_size, data.test_size, data.steps_per_epoch(8)) == (30, 50, 3)
    train = [b for _, b in data.train_batches(epoch=1, batch_size=8)]
    assert [len(b) for b in train] == [8, 8, 8]
    again = [b for _, b in data.train_batches(epoch=1, batch_size=8)]
    assert torch.equal(torch.cat(train), torch.cat(again))
    shards = [torch.cat([b for _, b in data.test_batches(8, rank=r, world=2)]) for r in range(2)]
    assert sorted(torch.cat(shards).tolist()) == list(range(50))
