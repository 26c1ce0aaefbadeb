"""ablations.data.images: each dataset read from tiny files written in its real on-disk format."""

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ablations.data import DataNotFoundError, LoaderData, TensorData, build_dataset

CPU = torch.device("cpu")


def build(cfg, **kw):
    return build_dataset(cfg, device=CPU, seed=0, **kw)


# --- CIFAR through torchvision -----------------------------------------------------------------


def write_cifar_python(root: Path, folder: str, n: int, label_key: str, files: list[str]):
    """Pickled batches as in the official python archives: data [n, 3072] uint8, labels."""
    (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in files:
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: list(rng.integers(0, 10, n)),
        }
        with open(root / folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    meta = "meta" if label_key == "fine_labels" else "batches.meta"
    key = "fine_label_names" if label_key == "fine_labels" else "label_names"
    with open(root / folder / meta, "wb") as fh:
        pickle.dump({key: [f"c{i}" for i in range(10)]}, fh)


@pytest.fixture
def trust_cifar_files(monkeypatch):
    # The fake batches cannot have the official MD5 sums; everything else is torchvision's code.
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)


def test_cifar10_reads_the_python_batches(tmp_path, trust_cifar_files, dataset_cfg):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    write_cifar_python(tmp_path, "cifar-10-batches-py", 4, "labels", files)
    data = build(dataset_cfg("cifar10", root=str(tmp_path), download=False))
    assert isinstance(data, TensorData) and data.train_size == 20 and data.test_size == 4
    assert data.train_images.shape == (20, 3, 32, 32) and data.train_images.dtype == torch.uint8
    x, y = next(data.train_batches(epoch=0, batch_size=8))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_cifar100_reads_fine_labels(tmp_path, trust_cifar_files, dataset_cfg):
    write_cifar_python(tmp_path, "cifar-100-python", 6, "fine_labels", ["train", "test"])
    data = build(dataset_cfg("cifar100", root=str(tmp_path), download=False))
    assert data.train_size == 6 and data.test_size == 6


def test_missing_cifar_says_where_and_how(tmp_path, dataset_cfg):
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py.*dataset.download=true"):
        build(dataset_cfg("cifar10", root=str(tmp_path / "nowhere"), download=False))


def test_cifar_download_failure_is_one_clear_error(tmp_path, monkeypatch, dataset_cfg):
    from torchvision.datasets import CIFAR10

    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(
        DataNotFoundError, match=r"Downloading .* failed \(<urlopen error no network>\)"
    ):
        build(dataset_cfg("cifar10", root=str(tmp_path), download=True))


# --- ImageFolder -------------------------------------------------------------------------------


def write_image_folder(root: Path, splits=("train", "test"), per_class=3, size=8):
    rng = np.random.default_rng(0)
    for split in splits:
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_image_folder_in_memory(tmp_path, dataset_cfg):
    write_image_folder(tmp_path)
    cfg = dataset_cfg("cifar10_jpeg", root=str(tmp_path), img_size=8, num_classes=2, limit_train=4)
    data = build(cfg)
    assert isinstance(data, TensorData) and data.train_size == 4 and data.test_size == 6
    assert sorted(data.test_labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_image_folder_streaming_with_timm_transforms(tmp_path, dataset_cfg):
    write_image_folder(tmp_path, splits=("train", "val"), size=20)
    cfg = dataset_cfg("imagenet", root=str(tmp_path), img_size=16, num_classes=2)
    data = build(cfg, num_workers=0)
    assert isinstance(data, LoaderData)
    x, y = next(iter(data.train_batches(epoch=0, batch_size=4)))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4,)
    x, _ = next(iter(data.test_batches(batch_size=6)))
    assert x.shape == (6, 3, 16, 16)


def test_missing_image_folder_says_where(tmp_path, dataset_cfg):
    write_image_folder(tmp_path, splits=("train",))
    with pytest.raises(DataNotFoundError, match=r"test/<class>/<image>"):
        build(dataset_cfg("cifar10_jpeg", root=str(tmp_path)))


# --- embedded and synthetic ---------------------------------------------------------------------


def test_digits_and_synthetic_are_offline_and_fixed(dataset_cfg):
    digits = build(dataset_cfg("digits", img_size=16))
    assert (digits.train_size, digits.test_size) == (1437, 360)
    assert digits.train_images.shape[1:] == (3, 16, 16)
    a, b = build(dataset_cfg("synthetic")), build(dataset_cfg("synthetic"))
    assert torch.equal(a.train_images, b.train_images) and a.train_size == 128
