"""Training augmentation: the reference recipes with timm and torchvision operations.

One RandAugment for every data path: timm's ``rand_augment_transform`` on PIL images, as the
reference recipes run it, built by `build_randaugment`. Images read by DataLoader workers get it
inside timm's transform pipeline (`loader_transforms`); static images kept in memory as one
uint8 tensor (CIFAR, digits, small ImageFolder trees) get `TensorAugment`: flips are batched on
the tensor's device, RandAugment runs per image on its PIL copy, random erasing is timm's.
Event frames get `SNNAugmentWide`, the DVS recipe, per sample and identical for all T frames.

All randomness comes from the global torch, numpy and ``random`` generators, which the
checkpoints save, so a resumed run draws exactly the augmentations an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import RandAugment, posterize, rand_augment_transform
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import str_to_pil_interp
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF


def _posterize(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize, where keeping 0 bits gives a black image as Pillow < 11 did (newer
    Pillow raises for 0 bits, which RandAugment's ``inc1`` ops reach near magnitude 10)."""
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return posterize(img, bits_to_keep, **kwargs)


def build_randaugment(
    policy: str, *, img_size: int, mean: Sequence[float], interpolation: str = "bicubic"
) -> RandAugment:
    """timm's RandAugment for a timm policy string, configured as timm's ``create_transform``
    configures it for an ``img_size`` image normalised with ``mean``.

    Args:
        policy: e.g. ``"rand-m9-n1-mstd0.4-inc1"``: magnitude 9 of 10, 1 op per image, Gaussian
            magnitude noise of std 0.4, the ops whose strength grows with the magnitude. Each
            drawn op is applied with probability 0.5 (timm's default ``p``).
        img_size: Image side (absolute translations are 45% of it).
        mean: Per-channel mean (0-1 scale); geometric ops fill with it.
        interpolation: Resampling of the geometric ops (``"random"``: bilinear or bicubic).

    Returns:
        A callable on PIL RGB images.

    Raises:
        ValueError: ``policy`` is not a RandAugment string timm reads.

    Example:
        >>> ra = build_randaugment("rand-m9-n1-mstd0.4-inc1", img_size=32, mean=[0.5] * 3)
        >>> ra.num_layers, len(ra.ops), ra.ops[4].name
        (1, 15, 'PosterizeIncreasing')
    """
    if not policy.startswith("rand"):
        raise ValueError(f"RandAugment policy {policy!r} must start with 'rand'")
    hparams: dict = {
        "translate_const": int(img_size * 0.45),
        "img_mean": tuple(min(255, round(255 * m)) for m in mean),
    }
    if interpolation != "random":
        hparams["interpolation"] = str_to_pil_interp(interpolation)
    try:
        transform = rand_augment_transform(policy, hparams)
    except AssertionError as err:  # timm asserts on an unknown section
        raise ValueError(
            f"unsupported RandAugment option in {policy!r}; known: m, n, p, mstd, mmax, inc, t"
        ) from err
    for op in transform.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize
    return transform


def loader_transforms(
    size: int, aug, mean: Sequence[float], std: Sequence[float]
) -> tuple[Callable, Callable]:
    """timm's train and eval transforms of PIL images (the reference ImageNet pipeline), with
    `build_randaugment` as the train pipeline's RandAugment.

    Args:
        size: Train crop and eval side.
        aug: The ``dataset.augment`` node (scale, ratio, hflip, randaugment, random_erasing,
            interpolation, crop_pct).
        mean, std: Normalisation.

    Returns:
        ``(train, test)`` transforms.
    """
    from timm.data import create_transform
    from torchvision import transforms

    common = {"interpolation": aug.interpolation, "mean": tuple(mean), "std": tuple(std)}
    primary, secondary, final = create_transform(
        size,
        is_training=True,
        scale=tuple(aug.scale),
        ratio=tuple(aug.ratio),
        hflip=aug.hflip,
        color_jitter=0.0,
        re_prob=aug.random_erasing,
        re_mode="const",
        re_count=1,
        separate=True,
        **common,
    )
    if aug.randaugment:  # timm then leaves colour jitter out, as it does here
        secondary = build_randaugment(
            aug.randaugment, img_size=size, mean=mean, interpolation=aug.interpolation
        )
    train = transforms.Compose([primary, secondary, final])
    test = create_transform(size, is_training=False, crop_pct=aug.crop_pct, **common)
    return train, test


class PILRandAugment:
    """`build_randaugment` on a uint8 batch ``[B, 3, H, W]``, one draw per image, in batch order.

    The images go through PIL on the CPU, as in the reference pipelines, and come back as a
    uint8 batch on their device, so both data paths draw the same ops with the same pixels.
    """

    def __init__(self, transform: RandAugment) -> None:
        self.transform = transform

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != 3:
            raise ValueError(f"RandAugment needs RGB images, got {images.shape[1]} channels")
        pixels = images.permute(0, 2, 3, 1).cpu().numpy()
        out = [np.asarray(self.transform(Image.fromarray(p, "RGB"))) for p in pixels]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(images.device)


class TensorAugment:
    """Flip, RandAugment, normalise and random-erase a uint8 batch ``[B, C, H, W]``.

    Args:
        mean: Per-channel mean (0-1 scale).
        std: Per-channel standard deviation.
        hflip: Horizontal flip probability.
        randaugment: timm policy string (see `build_randaugment`), or ``None``.
        random_erasing: Probability of one constant erase per image (timm, ``mode="const"``).
        img_size: Image side, for RandAugment's absolute translations.
        interpolation: RandAugment's resampling.

    Example:
        >>> aug = TensorAugment([0.5] * 3, [0.5] * 3, hflip=0.5, randaugment="rand-m9-n1")
        >>> aug(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), train=True).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        hflip: float = 0.0,
        randaugment: str | None = None,
        random_erasing: float = 0.0,
        img_size: int = 32,
        interpolation: str = "bicubic",
    ) -> None:
        self.mean = torch.tensor(list(mean)).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std)).view(1, -1, 1, 1)
        self.hflip = float(hflip)
        self.randaugment = None
        if randaugment:
            ra = build_randaugment(
                randaugment, img_size=img_size, mean=mean, interpolation=interpolation
            )
            self.randaugment = PILRandAugment(ra)
        self.random_erasing = float(random_erasing)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float() / 255.0 - mean) / std

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        if not train:
            return self.normalize(images)
        if self.hflip > 0:
            flip = torch.rand(images.shape[0], device=images.device) < self.hflip
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        if self.randaugment is not None:
            images = self.randaugment(images)
        out = self.normalize(images)
        if self.random_erasing > 0:
            eraser = RandomErasing(
                probability=self.random_erasing, mode="const", max_count=1, device=str(out.device)
            )
            out = eraser(out)
        return out


class SNNAugmentWide:
    """The DVS recipe's augmentation of one event-frame sample ``[T, C, H, W]``.

    Flip with probability ``hflip``, then one op drawn uniformly among identity, ShearX (±0.3),
    TranslateX/Y (±5 px), Rotate (±30°) and Cutout (erase one square of 0.1-11 % of the area),
    with nearest interpolation; all T frames get the same op. Magnitudes are drawn uniformly in
    the ranges above (the reference draws from a fixed grid of the same range).

    Example:
        >>> SNNAugmentWide()(torch.ones(16, 2, 128, 128)).shape
        torch.Size([16, 2, 128, 128])
    """

    OPS = ("identity", "shear_x", "translate_x", "translate_y", "rotate", "cutout")

    def __init__(self, hflip: float = 0.5, wide: bool = True) -> None:
        self.hflip = float(hflip)
        self.wide = wide
        self.cutout = v2.RandomErasing(p=1.0, scale=(0.001, 0.11), ratio=(1.0, 1.0))

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.hflip > 0 and float(torch.rand(())) < self.hflip:
            frames = frames.flip(-1)
        if not self.wide:
            return frames
        op = self.OPS[int(torch.randint(len(self.OPS), ()))]
        u = float(torch.rand(())) * 2 - 1  # uniform in [-1, 1]
        nearest = InterpolationMode.NEAREST
        if op == "shear_x":
            shear = math.degrees(math.atan(0.3 * u))
            return TF.affine(
                frames,
                angle=0.0,
                translate=[0, 0],
                scale=1.0,
                shear=[shear, 0.0],
                interpolation=nearest,
            )
        if op in ("translate_x", "translate_y"):
            shift = [round(5 * u), 0] if op == "translate_x" else [0, round(5 * u)]
            return TF.affine(
                frames,
                angle=0.0,
                translate=shift,
                scale=1.0,
                shear=[0.0, 0.0],
                interpolation=nearest,
            )
        if op == "rotate":
            return TF.rotate(frames, 30.0 * u, interpolation=nearest)
        if op == "cutout":
            return self.cutout(frames)
        return frames
