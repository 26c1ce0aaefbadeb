"""Training augmentation on tensors: the reference recipes with torchvision/timm operations.

Static images (CIFAR, digits, small ImageFolder trees) live in memory as one uint8 tensor, on the
GPU when there is one, so `TensorAugment` works on whole batches there: flips are batched, the
RandAugment op is drawn per image (torchvision's ``v2.RandAugment``), random erasing is timm's.
Event frames get `SNNAugmentWide`, the DVS recipe, per sample and identical for all T frames.

All randomness comes from the global torch, numpy and ``random`` generators, which the
checkpoints save, so a resumed run draws exactly the augmentations an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

#: Magnitude scale of timm policy strings ("m9" is 9 of 10).
LEVEL_MAX = 10


def parse_randaugment(policy: str) -> tuple[int, float, float]:
    """Read a timm RandAugment string such as ``"rand-m9-n1-mstd0.4-inc1"``.

    Returns:
        ``(num_ops, magnitude, magnitude_std)`` with timm's defaults (2 ops, no noise).
        ``inc`` is accepted and needs nothing: torchvision's ops are already signed both ways.

    Example:
        >>> parse_randaugment("rand-m9-n1-mstd0.4-inc1")
        (1, 9.0, 0.4)
    """
    parts = policy.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment policy {policy!r} must start with 'rand-'")
    num_ops, magnitude, magnitude_std = 2, 9.0, 0.0
    for part in parts[1:]:
        key = part.rstrip("0123456789.")
        value = part[len(key) :]
        if key == "m":
            magnitude = float(value)
        elif key == "n":
            num_ops = int(value)
        elif key == "mstd":
            magnitude_std = float(value)
        elif key != "inc":
            raise ValueError(
                f"unsupported RandAugment option {part!r} in {policy!r}; known: m, n, mstd, inc"
            )
    return num_ops, magnitude, magnitude_std


class PerImageRandAugment:
    """torchvision RandAugment with a timm policy string, one draw per image.

    ``v2.RandAugment`` applied to a batch would use one op for the whole batch; the references
    draw per image, so this loops over the batch (cheap next to a spiking step). Magnitudes use
    101 bins so timm's Gaussian magnitude noise (``mstd``) keeps a 0.1 resolution.

    Differences from timm's PIL implementation: torchvision's op set and maxima (e.g. translate
    is relative to the image side), bilinear interpolation, fill with the dataset mean.
    """

    def __init__(self, policy: str, fill: Sequence[int]) -> None:
        self.num_ops, self.magnitude, self.magnitude_std = parse_randaugment(policy)
        self.fill = list(fill)

    def _transform(self) -> v2.RandAugment:
        magnitude = self.magnitude
        if self.magnitude_std > 0:
            magnitude += self.magnitude_std * float(torch.randn(()))
        level = min(max(magnitude, 0.0), LEVEL_MAX)
        return v2.RandAugment(
            num_ops=self.num_ops,
            magnitude=round(level * 10),
            num_magnitude_bins=LEVEL_MAX * 10 + 1,
            interpolation=InterpolationMode.BILINEAR,
            fill=self.fill,
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._transform()(image) for image in images])


class TensorAugment:
    """Flip, RandAugment, normalise and random-erase a uint8 batch ``[B, C, H, W]``.

    Args:
        mean: Per-channel mean (0-1 scale).
        std: Per-channel standard deviation.
        hflip: Horizontal flip probability.
        randaugment: timm-style policy string, or ``None``.
        random_erasing: Probability of one constant erase per image (timm, ``mode="const"``).

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
    ) -> None:
        self.mean = torch.tensor(list(mean)).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std)).view(1, -1, 1, 1)
        self.hflip = float(hflip)
        fill = [round(255 * m) for m in mean]
        self.randaugment = PerImageRandAugment(randaugment, fill) if randaugment else None
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
