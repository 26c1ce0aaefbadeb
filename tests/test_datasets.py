"""The harness's datasets, each read from tiny files written in the dataset's real on-disk format."""

import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ablations.augment import SNNAugmentWide, TensorAugment, parse_randaugment
from ablations.datasets import (
    LoaderData,
    TensorData,
    build_dataset,
    per_class_split,
    subset_indices,
)
from gradprobe.data import DataNotFoundError

CONF = Path(__file__).resolve().parents[1] / "ablations" / "conf" / "dataset"
CPU = torch.device("cpu")


def dataset_cfg(option: str, **changes):
    """A ``dataset`` group option as composed (its parent file first), with ``changes``."""
    node = OmegaConf.load(CONF / f"{option}.yaml")
    parents = [d for d in node.pop("defaults", []) if d != "_self_"]
    base = OmegaConf.merge(*(dataset_cfg(p) for p in parents)) if parents else OmegaConf.create()
    cfg = OmegaConf.merge(base, node, changes)
    return cfg


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


def test_cifar10_reads_the_python_batches(tmp_path, trust_cifar_files):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    write_cifar_python(tmp_path, "cifar-10-batches-py", 4, "labels", files)
    data = build(dataset_cfg("cifar10", root=str(tmp_path), download=False))
    assert isinstance(data, TensorData) and data.train_size == 20 and data.test_size == 4
    assert data.train_images.shape == (20, 3, 32, 32) and data.train_images.dtype == torch.uint8
    x, y = next(data.train_batches(epoch=0, batch_size=8))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_cifar100_reads_fine_labels(tmp_path, trust_cifar_files):
    write_cifar_python(tmp_path, "cifar-100-python", 6, "fine_labels", ["train", "test"])
    data = build(dataset_cfg("cifar100", root=str(tmp_path), download=False))
    assert data.train_size == 6 and data.test_size == 6


def test_missing_cifar_says_where_and_how(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py.*dataset.download=true"):
        build(dataset_cfg("cifar10", root=str(tmp_path / "nowhere"), download=False))


def test_cifar_download_failure_is_one_clear_error(tmp_path, monkeypatch):
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


def test_image_folder_in_memory(tmp_path):
    write_image_folder(tmp_path)
    cfg = dataset_cfg("cifar10_jpeg", root=str(tmp_path), img_size=8, num_classes=2, limit_train=4)
    data = build(cfg)
    assert isinstance(data, TensorData) and data.train_size == 4 and data.test_size == 6
    assert sorted(data.test_labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_image_folder_streaming_with_timm_transforms(tmp_path):
    write_image_folder(tmp_path, splits=("train", "val"), size=20)
    cfg = dataset_cfg("imagenet", root=str(tmp_path), img_size=16, num_classes=2)
    data = build(cfg, num_workers=0)
    assert isinstance(data, LoaderData)
    x, y = next(iter(data.train_batches(epoch=0, batch_size=4)))
    assert x.shape == (4, 3, 16, 16) and y.shape == (4,)
    x, _ = next(iter(data.test_batches(batch_size=6)))
    assert x.shape == (6, 3, 16, 16)


def test_randaugment_posterize_to_zero_bits_gives_black_images() -> None:
    """RandAugment's ``PosterizeIncreasing`` keeps 0 bits at magnitude 10; Pillow >= 11 raises
    there, which would stop a training run mid-epoch. It gives a black image, as it used to."""
    from PIL import Image, ImageOps
    from timm.data import create_transform

    from ablations.datasets import keep_posterize_zero_bits

    transform = create_transform(16, is_training=True, auto_augment="rand-m9-n1-mstd0.4-inc1")
    assert keep_posterize_zero_bits(transform) == 1
    (op,) = [
        op
        for step in transform.transforms
        for op in getattr(step, "ops", ())
        if "Poster" in op.name
    ]
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # 4 - 4 = 0 bits kept
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert np.asarray(op(img)).max() == 0
    op.magnitude = 5  # 4 - 2 = 2 bits kept: Pillow's own posterize
    assert np.array_equal(np.asarray(op(img)), np.asarray(ImageOps.posterize(img, 2)))


def test_missing_image_folder_says_where(tmp_path):
    write_image_folder(tmp_path, splits=("train",))
    with pytest.raises(DataNotFoundError, match=r"test/<class>/<image>"):
        build(dataset_cfg("cifar10_jpeg", root=str(tmp_path)))


# --- event cameras -----------------------------------------------------------------------------

CIFAR10DVS_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def write_aedat2(path: Path, n: int, rng) -> None:
    """CIFAR10-DVS's AEDAT 2.0: '#' header lines, then big-endian (address, timestamp) uint32 pairs
    with x in bits 1-7, y in bits 8-14 and the polarity in bit 0."""
    x, y, p = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
    address = (y << 8) | (x << 1) | p
    stamps = np.cumsum(rng.integers(1, 100, n))
    words = np.stack([address, stamps], axis=1).astype(">u4")
    path.write_bytes(b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n" + words.tobytes())


def write_cifar10_dvs(root: Path, per_class: int = 10, events: int = 64) -> None:
    rng = np.random.default_rng(0)
    for cls in CIFAR10DVS_CLASSES:
        (root / "extract" / cls).mkdir(parents=True)
        for i in range(per_class):
            write_aedat2(root / "extract" / cls / f"cifar10_{cls}_{i}.aedat", events, rng)


def test_cifar10_dvs_frames_and_reference_split(tmp_path):
    write_cifar10_dvs(tmp_path)
    cfg = dataset_cfg("cifar10dvs", root=str(tmp_path), download=False)
    data = build(cfg, frames=4)
    assert isinstance(data, LoaderData)
    assert (data.train_size, data.test_size) == (90, 10)  # ceil(0.9 * 10) per class
    assert (tmp_path / "events_np").is_dir() and (
        tmp_path / "frames_number_4_split_by_number"
    ).is_dir()
    frames, _ = data.test_set[0]
    assert frames.shape == (4, 2, 128, 128) and frames.sum() == 64  # every event counted once
    x, y = next(iter(data.train_batches(epoch=0, batch_size=8)))
    assert x.shape == (8, 4, 2, 128, 128) and y.shape == (8,)
    # the test split is the last file of each class in file order
    test_labels = sorted(int(data.test_set[i][1]) for i in range(10))
    assert test_labels == list(range(10))
    # a second build reuses the cached frames
    again = build(cfg, frames=4)
    assert torch.equal(again.test_set[3][0], data.test_set[3][0])


def write_aedat3(path: Path, stamps: np.ndarray, rng) -> None:
    """DVS128 Gesture's AEDAT 3.1: header, then packets of a 28-byte header and 8-byte polarity
    events (x in bits 17-31, y in bits 2-16, polarity in bit 1, little-endian)."""
    n = len(stamps)
    x, y, p = rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)
    data = (x.astype(np.uint32) << 17) | (y.astype(np.uint32) << 2) | (p.astype(np.uint32) << 1)
    header = struct.pack("<HHIIIIII", 1, 1, 8, 4, 0, n, n, n)
    events = np.stack([data, stamps.astype(np.uint32)], axis=1).astype("<u4").tobytes()
    path.write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n" + header + events)


def write_dvs128_gesture(root: Path) -> None:
    rng = np.random.default_rng(0)
    folder = root / "extract" / "DvsGesture"
    folder.mkdir(parents=True)
    trials = {"train": ["user01_lab.aedat"], "test": ["user24_lab.aedat"]}
    for split, names in trials.items():
        (folder / f"trials_to_{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            stamps = np.arange(11 * 40) * 10  # 40 events per gesture
            write_aedat3(folder / name, stamps, rng)
            rows = [f"{k + 1},{k * 400},{(k + 1) * 400}" for k in range(11)]
            (folder / name.replace(".aedat", "_labels.csv")).write_text(
                "class,startTime_usec,endTime_usec\n" + "\n".join(rows) + "\n"
            )


def test_dvs128_gesture_official_split(tmp_path):
    write_dvs128_gesture(tmp_path)
    data = build(dataset_cfg("dvs128", root=str(tmp_path)), frames=5)
    assert (data.train_size, data.test_size) == (11, 11)
    frames, label = data.test_set[0]  # the test split is not augmented
    assert frames.shape == (5, 2, 128, 128) and frames.sum() == 40 and label == 0
    assert data.train_set[0][0].shape == (5, 2, 128, 128)


def test_missing_dvs_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"dataset\.download=true"):
        build(dataset_cfg("cifar10dvs", root=str(tmp_path), download=False), frames=4)
    with pytest.raises(DataNotFoundError, match=r"ibm\.ent\.box\.com"):
        build(dataset_cfg("dvs128", root=str(tmp_path)), frames=4)
    assert not (tmp_path / "events_np.building").exists()


def test_per_class_split_is_the_references():
    assert per_class_split([0, 1, 0, 1, 0, 1, 0, 1], 0.5) == ([0, 2, 1, 3], [4, 6, 5, 7])
    train, test = per_class_split([c for c in range(10) for _ in range(1000)], 0.9)
    assert (len(train), len(test)) == (9000, 1000)


# --- embedded, synthetic, subsets, augmentation ------------------------------------------------


def test_digits_and_synthetic_are_offline_and_fixed():
    digits = build(dataset_cfg("digits", img_size=16))
    assert (digits.train_size, digits.test_size) == (1437, 360)
    assert digits.train_images.shape[1:] == (3, 16, 16)
    a, b = build(dataset_cfg("synthetic")), build(dataset_cfg("synthetic"))
    assert torch.equal(a.train_images, b.train_images) and a.train_size == 128


def test_epoch_order_depends_only_on_seed_and_epoch():
    data = build(dataset_cfg("synthetic"))
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


def test_tensor_augment_is_seeded_and_keeps_shapes():
    aug = TensorAugment(
        [0.5] * 3, [0.5] * 3, hflip=0.5, randaugment="rand-m9-n1-mstd0.4-inc1", random_erasing=0.5
    )
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    torch.manual_seed(0)
    first = aug(images, train=True)
    torch.manual_seed(0)
    import random

    random.seed(0)
    torch.manual_seed(0)
    a = aug(images, train=True)
    random.seed(0)
    torch.manual_seed(0)
    b = aug(images, train=True)
    assert first.shape == images.shape and torch.equal(a, b)
    assert torch.allclose(aug(images, train=False), (images.float() / 255 - 0.5) / 0.5)
    assert parse_randaugment("rand-m9-mstd0.5-inc1") == (2, 9.0, 0.5)
    with pytest.raises(ValueError, match="unsupported RandAugment option"):
        parse_randaugment("rand-m9-w0")


def test_snn_augment_wide_moves_all_frames_alike():
    torch.manual_seed(1)
    frames = torch.zeros(4, 2, 32, 32)
    frames[:, :, 10:20, 10:20] = 1
    for _ in range(10):
        out = SNNAugmentWide(hflip=0.5)(frames)
        assert out.shape == frames.shape
        assert all(torch.equal(out[0], out[t]) for t in range(4))
