"""ablations.data.augment: one RandAugment (timm's) for both data paths, the tensor batch
augmentation, and the DVS recipe's frame augmentation."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageOps

from ablations.data import build_dataset
from ablations.data.augment import (
    SNNAugmentWide,
    TensorAugment,
    build_randaugment,
    loader_transforms,
)

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
POLICIES = ["rand-m9-n1-mstd0.4-inc1", "rand-m9-mstd0.5-inc1"]
#: timm's RandAugment ops, in its order; ``inc1`` takes the variants whose strength grows.
TIMM_OPS = [
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
]
INCREASING = {"Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness"}


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def augment_cfg(policy, **changes):
    """A loader-path ``dataset.augment`` node: no crop, so only RandAugment moves pixels."""
    node = {
        "hflip": 0.0,
        "randaugment": policy,
        "random_erasing": 0.0,
        "scale": [1.0, 1.0],
        "ratio": [1.0, 1.0],
        "interpolation": "bicubic",
        "crop_pct": 1.0,
    }
    return OmegaConf.create({**node, **changes})


def uint8_images(n: int = 24, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def described(ra) -> list[tuple]:
    return [(op.name, op.prob, op.magnitude, op.magnitude_std, op.kwargs) for op in ra.ops]


def test_the_policy_string_reads_as_timm_reads_it():
    inc = build_randaugment("rand-m9-mstd0.5-inc1", img_size=32, mean=MEAN)
    assert inc.num_layers == 2  # timm's default op count
    assert [op.name for op in inc.ops] == [
        f"{name}Increasing" if name in INCREASING else name for name in TIMM_OPS
    ]
    assert {(op.prob, op.magnitude, op.magnitude_std) for op in inc.ops} == {(0.5, 9, 0.5)}
    plain = build_randaugment("rand-m7-n1", img_size=32, mean=MEAN)
    assert plain.num_layers == 1 and [op.name for op in plain.ops] == TIMM_OPS
    assert plain.ops[0].kwargs["fillcolor"] == (125, 123, 114)  # the mean, as timm fills
    with pytest.raises(ValueError, match="unsupported RandAugment option"):
        build_randaugment("rand-m9-w0", img_size=32, mean=MEAN)
    with pytest.raises(ValueError, match="must start with 'rand'"):
        build_randaugment("original-mstd0.5", img_size=32, mean=MEAN)


@pytest.mark.parametrize("policy", POLICIES)
def test_both_data_paths_draw_the_same_ops_and_pixels(policy):
    """In memory (uint8 tensors) and through DataLoader workers (PIL images), one policy and
    seed give the same op set and, on the same uint8 images, the same normalised pixels."""
    in_memory = TensorAugment(MEAN, STD, randaugment=policy, img_size=32)
    train, _ = loader_transforms(32, augment_cfg(policy), MEAN, STD)
    crop, loader_ra, final = train.transforms
    assert described(in_memory.randaugment.transform) == described(loader_ra)
    images = uint8_images()
    seed_all(1)
    a = in_memory(images, train=True)
    seed_all(1)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    b = torch.stack([final(loader_ra(img)) for img in pil])
    assert torch.equal(a, b)
    assert not torch.equal(a, in_memory(images, train=False))  # the ops did change pixels
    # the crop in front of the loader's RandAugment keeps a 32 x 32 image as it is
    assert np.array_equal(np.asarray(crop(pil[0])), np.asarray(pil[0]))


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="shared CIFAR-10 JPEG set not present")
def test_real_cifar10_gets_the_reference_randaugment_on_both_paths(dataset_cfg):
    cfg = dataset_cfg("cifar10_jpeg", root=str(SHARED_CIFAR), limit_train=256, limit_test=64)
    data = build_dataset(cfg, device=torch.device("cpu"), seed=0)  # cifar10's recipe
    x, y = next(data.train_batches(epoch=0, batch_size=64))
    assert x.shape == (64, 3, 32, 32) and y.shape == (64,)
    policy = cfg.augment.randaugment
    assert policy == "rand-m9-n1-mstd0.4-inc1"
    train, _ = loader_transforms(32, augment_cfg(policy), cfg.mean, cfg.std)
    _, loader_ra, final = train.transforms
    in_memory = TensorAugment(cfg.mean, cfg.std, randaugment=policy)
    images = data.train_images[:64]
    seed_all(4)
    a = in_memory(images, train=True)
    seed_all(4)
    b = torch.stack([final(loader_ra(Image.fromarray(i.permute(1, 2, 0).numpy()))) for i in images])
    assert torch.equal(a, b)


@pytest.mark.parametrize("policy", [None, *POLICIES])
def test_loader_path_is_timms_create_transform(policy):
    """The loader path's pipeline is timm's ``create_transform`` (the reference ImageNet
    pipeline) with its RandAugment built by `build_randaugment`: same pixels, same seed."""
    from timm.data import create_transform

    aug = augment_cfg(policy, hflip=0.5, random_erasing=0.25, scale=[0.5, 1.0])
    ours, _ = loader_transforms(28, aug, MEAN, STD)
    timm_tf = create_transform(
        28,
        is_training=True,
        scale=(0.5, 1.0),
        ratio=(1.0, 1.0),
        hflip=0.5,
        color_jitter=0.0,
        auto_augment=policy,
        interpolation="bicubic",
        mean=tuple(MEAN),
        std=tuple(STD),
        re_prob=0.25,
        re_mode="const",
        re_count=1,
    )
    images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in uint8_images(12, 36)]
    seed_all(2)
    a = torch.stack([ours(img) for img in images])
    seed_all(2)
    b = torch.stack([timm_tf(img) for img in images])
    assert torch.equal(a, b)


def test_randaugment_posterize_to_zero_bits_gives_black_images() -> None:
    """RandAugment's ``PosterizeIncreasing`` keeps 0 bits at magnitude 10; Pillow >= 11 raises
    there, which would stop a training run mid-epoch. It gives a black image, as it used to."""
    ra = build_randaugment("rand-m9-n1-mstd0.4-inc1", img_size=16, mean=MEAN)
    (op,) = [op for op in ra.ops if "Poster" in op.name]
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # 4 - 4 = 0 bits kept
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert np.asarray(op(img)).max() == 0
    op.magnitude = 5  # 4 - 2 = 2 bits kept: Pillow's own posterize
    assert np.array_equal(np.asarray(op(img)), np.asarray(ImageOps.posterize(img, 2)))


def test_tensor_augment_is_seeded_and_keeps_shapes():
    aug = TensorAugment(
        [0.5] * 3, [0.5] * 3, hflip=0.5, randaugment="rand-m9-n1-mstd0.4-inc1", random_erasing=0.5
    )
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    seed_all(0)
    a = aug(images, train=True)
    seed_all(0)
    b = aug(images, train=True)
    assert a.shape == images.shape and a.is_contiguous() and torch.equal(a, b)
    assert torch.allclose(aug(images, train=False), (images.float() / 255 - 0.5) / 0.5)
    with pytest.raises(ValueError, match="needs RGB images"):
        aug(images[:, :1], train=True)


@pytest.mark.gpu
def test_tensor_augment_on_cuda_matches_the_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ra = TensorAugment(MEAN, STD, randaugment=POLICIES[0]).randaugment
    images = uint8_images()
    seed_all(3)
    on_cpu = ra(images)
    seed_all(3)
    on_gpu = ra(images.cuda())
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu)


def test_snn_augment_wide_moves_all_frames_alike():
    torch.manual_seed(1)
    frames = torch.zeros(4, 2, 32, 32)
    frames[:, :, 10:20, 10:20] = 1
    for _ in range(10):
        out = SNNAugmentWide(hflip=0.5)(frames)
        assert out.shape == frames.shape
        assert all(torch.equal(out[0], out[t]) for t in range(4))
