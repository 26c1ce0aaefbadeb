"""The grid the CIFAR benchmarks sweep: every backbone x downsampling variant, at one size."""

from __future__ import annotations

import argparse

from gradprobe.downsample import list_downsamples
from gradprobe.models import list_models


def add_grid_arguments(parser: argparse.ArgumentParser, *, repeats: int) -> None:
    """Add ``--models``, ``--downsample``, ``--batch-size``, ``--T`` and ``--repeats``.

    ``--models`` and ``--downsample`` default to every CIFAR backbone and every variant.

    Args:
        parser: The benchmark's parser.
        repeats: The default of ``--repeats``.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_grid_arguments(parser, repeats=3)
        >>> parser.parse_args(["--T", "2"]).batch_size
        16
    """
    parser.add_argument("--models", nargs="*", default=list_models("*_cifar"))
    parser.add_argument("--downsample", nargs="*", default=list_downsamples())
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=repeats)
