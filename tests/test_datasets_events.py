"""ablations.data.events: CIFAR10-DVS and DVS128 Gesture read from tiny files written in their
real AEDAT formats, through spikingjelly."""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ablations.data import DataNotFoundError, LoaderData, build_dataset
from ablations.data.events import per_class_split

CPU = torch.device("cpu")


def build(cfg, **kw):
    return build_dataset(cfg, device=CPU, seed=0, **kw)


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


def test_cifar10_dvs_frames_and_reference_split(tmp_path, dataset_cfg):
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


def test_dvs128_gesture_official_split(tmp_path, dataset_cfg):
    write_dvs128_gesture(tmp_path)
    data = build(dataset_cfg("dvs128", root=str(tmp_path)), frames=5)
    assert (data.train_size, data.test_size) == (11, 11)
    frames, label = data.test_set[0]  # the test split is not augmented
    assert frames.shape == (5, 2, 128, 128) and frames.sum() == 40 and label == 0
    assert data.train_set[0][0].shape == (5, 2, 128, 128)


def test_missing_dvs_data_says_how_to_get_it(tmp_path, dataset_cfg):
    with pytest.raises(DataNotFoundError, match=r"dataset\.download=true"):
        build(dataset_cfg("cifar10dvs", root=str(tmp_path), download=False), frames=4)
    with pytest.raises(DataNotFoundError, match=r"ibm\.ent\.box\.com"):
        build(dataset_cfg("dvs128", root=str(tmp_path)), frames=4)
    assert not (tmp_path / "events_np.building").exists()


def test_per_class_split_is_the_references():
    assert per_class_split([0, 1, 0, 1, 0, 1, 0, 1], 0.5) == ([0, 2, 1, 3], [4, 6, 5, 7])
    train, test = per_class_split([c for c in range(10) for _ in range(1000)], 0.9)
    assert (len(train), len(test)) == (9000, 1000)
