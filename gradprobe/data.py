"""Small image sources shared by the CLI, the harness and the notebooks.

Both return whole splits as one ``uint8`` tensor ``[N, C, H, W]`` plus ``int64`` labels: for
CIFAR-sized data that is a few hundred MB at most, and augmentation then runs on tensors.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DIGITS_CLASSES = tuple(str(i) for i in range(10))


class DataNotFoundError(FileNotFoundError):
    """A dataset is not where the configuration says; the message says what to do."""


def load_digits(
    train: bool = True, size: int = 32, channels: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans), resized; no download.

    The split is fixed: every fifth image (by index) is test, giving 1,437 train / 360 test.

    Args:
        train: Train or test split.
        size: Output side in pixels (bilinear resize from 8x8).
        channels: 1, or 3 to repeat the grey channel for RGB backbones.

    Returns:
        ``(images uint8 [N, channels, size, size], labels int64 [N])``.

    Example:
        >>> x, y = load_digits(train=False)
        >>> tuple(x.shape), int(y.max())
        ((360, 3, 32, 32), 9)
    """
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    test = torch.arange(len(labels)) % 5 == 0
    keep = ~test if train else test
    images = F.interpolate(images[keep], size=(size, size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, channels, -1, -1)
    return images.contiguous(), labels[keep]


def image_folder_files(root: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """Files and labels of an ImageFolder tree ``root/<class>/<image>``, in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {str(root)!r} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataNotFoundError(f"image folder {str(root)!r} has no class sub-folders")
    files, labels = [], []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [index] * len(found)
    if not files:
        raise DataNotFoundError(
            f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files, labels, classes


def load_image_folder(
    root: str | os.PathLike,
    limit: int | None = None,
    size: int | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode an ImageFolder tree into one uint8 tensor.

    Args:
        root: Folder with one sub-folder per class (e.g. ``cifar10-jpeg/test``).
        limit: Keep a seeded random subset of this many images (all classes mixed).
        size: Resize every image to ``size x size`` (``None``: all images must share a size).
        seed: Seed of the subset draw.
        workers: Decoding threads (default: the CPU count).

    Returns:
        ``(images uint8 [N, 3, H, W], labels int64 [N], class names)``.
    """
    from PIL import Image

    files, labels, classes = image_folder_files(root)
    order = np.arange(len(files))
    if limit is not None and limit < len(files):
        order = np.sort(np.random.default_rng(seed).choice(len(files), size=limit, replace=False))

    def decode(i: int) -> np.ndarray:
        with Image.open(files[i]) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            return np.asarray(im)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        arrays = list(pool.map(decode, order))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in {str(root)!r} differ in size {sorted(shapes)[:3]}; pass size=")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([labels[i] for i in order], dtype=torch.int64), classes
