"""Shared image sources: embedded digits and ImageFolder decoding."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradprobe.data import DataNotFoundError, load_digits, load_image_folder

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"


def test_digits_split_is_fixed_and_real():
    x_tr, _ = load_digits(train=True)
    x_te, y_te = load_digits(train=False)
    assert x_tr.shape == (1437, 3, 32, 32) and x_te.shape == (360, 3, 32, 32)
    assert x_tr.dtype == torch.uint8 and set(y_te.tolist()) == set(range(10))
    assert torch.equal(load_digits(train=False)[0], x_te)
    assert 40 < x_tr.float().mean() < 120  # real strokes on a dark background, not noise


def test_image_folder_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("b", "a"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    x, y, classes = load_image_folder(tmp_path)
    assert classes == ["a", "b"] and x.shape == (6, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1]
    sub, _, _ = load_image_folder(tmp_path, limit=4, seed=3)
    assert sub.shape[0] == 4 and torch.equal(sub, load_image_folder(tmp_path, limit=4, seed=3)[0])
    assert load_image_folder(tmp_path, size=4)[0].shape == (6, 3, 4, 4)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_missing_or_empty_folder_is_a_clear_error(tmp_path, make):
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        load_image_folder(make(tmp_path))


@pytest.mark.skipif(not CIFAR.is_dir(), reason="shared CIFAR-10 JPEG set not present")
def test_real_cifar10_subset():
    x, y, classes = load_image_folder(CIFAR / "test", limit=64)
    assert x.shape == (64, 3, 32, 32) and len(classes) == 10 and len(set(y.tolist())) > 5
