"""The CML paper's vocabulary and reference numbers, and how our run fields map onto them.

The paper's Tables 1-5 ship as data (``reports/data/paper_tables.csv``, one row per reported
number). `paper_reference` turns the rows that belong to Spikformer and Spikingformer, the only
backbones our registry reproduces, into keys that line up with our runs: dataset, family,
``L-D`` architecture, time steps, epochs and downsampling variant. The other methods the paper
quotes (TET, SEW ResNet, ...) stay in the CSV but are not our rows. `TABLES` says how each of
the paper's tables is laid out (`TableSpec`); `reports.tables` fills them.

Variant labels come from the one torch-free table, `gradprobe.labels`. A variant that table does
not know (one registered in the process that trained it) is named by the label its run
documents carry (``downsample_label``); `reports.load.Results.labels` holds those, and the
functions below take them as ``labels``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pandas as pd

from gradprobe import labels as label_table

BASELINE = "lif_maxpool"

# How Tables 2-5 name a backbone with a variant where it is not "<backbone> + <variant label>":
# "Spikformer" (the baseline), "Spikformer + CML".
VARIANT_SUFFIXES = {"lif_maxpool": "", "maxpool_lif": " + CML"}

FAMILY_LABELS = {"spikformer": "Spikformer", "spikingformer": "Spikingformer"}

# Our dataset names -> the column headers of the paper.
DATASET_LABELS = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "imagenet": "ImageNet",
    "cifar10_dvs": "CIFAR10-DVS",
    "dvs128_gesture": "DVS128 Gesture",
}

# The spec CSV spells the neuromorphic datasets without underscores.
_PAPER_DATASETS = {"cifar10dvs": "cifar10_dvs", "dvs128gesture": "dvs128_gesture"}

_ARCH = re.compile(r"^(?P<family>[A-Za-z]+)-(?P<depth>\d+)-(?P<dim>\d+)(?:-(?P<epochs>\d+)E)?$")
_MODEL = re.compile(r"^(?P<family>[a-z0-9]+)_(?P<depth>\d+)_(?P<dim>\d+)(?:_.*)?$")


def variant_label(variant: str, labels: Mapping[str, str] | None = None) -> str:
    """A downsampling variant's label: from ``labels`` (run documents), else the paper's name or
    a registered label (`gradprobe.labels`), else the registry name."""
    if labels and variant in labels:
        return labels[variant]
    return label_table.variant_label(variant)


def family_label(family: str) -> str:
    """The paper's spelling of a backbone family (unknown families keep their name)."""
    return FAMILY_LABELS.get(family, family)


def dataset_label(dataset: str) -> str:
    """The paper's column header for a dataset; datasets it lacks get a capitalised name."""
    return DATASET_LABELS.get(dataset, dataset.replace("_", " ").capitalize())


def method_label(family: str, variant: str, labels: Mapping[str, str] | None = None) -> str:
    """Row label of Tables 2-5: ``"Spikformer"`` for the baseline, ``"Spikformer + CML"``, ...

    Example:
        >>> method_label("spikingformer", "maxpool_lif")
        'Spikingformer + CML'
        >>> method_label("spikformer", "avgpool_lif")
        'Spikformer + ConvBN-AvgPool-LIF'
    """
    suffix = VARIANT_SUFFIXES.get(variant, f" + {variant_label(variant, labels)}")
    return f"{family_label(family)}{suffix}"


def method_labels(frame: pd.DataFrame, labels: Mapping[str, str] | None = None) -> list[str]:
    """`method_label` of every row of a frame with ``family`` and ``variant`` columns."""
    return [
        method_label(f, v, labels) for f, v in zip(frame["family"], frame["variant"], strict=True)
    ]


def parse_model(model: str, family: str | None = None) -> tuple[str, str, int | None, int | None]:
    """Split a registry model name into ``(family, arch, depth, dim)``.

    ``spikformer_4_384_cifar`` gives ``("spikformer", "4-384", 4, 384)``: L blocks of width D,
    the paper's ``Spikformer-L-D``. The harness records a registered name whose architecture
    was changed by keyword arguments as ``name(k=v,...)``; ``depth`` and ``embed_dim`` then
    replace L and D, and the other arguments stay in the arch in parentheses. A name without
    ``_L_D`` keeps everything after the family as its arch and has no depth or dim.

    Example:
        >>> parse_model("spikingformer_8_768_imagenet")
        ('spikingformer', '8-768', 8, 768)
        >>> parse_model("spikformer_2_384_cifar(depth=1,embed_dim=64,num_heads=4)")
        ('spikformer', '1-64 (num_heads=4)', 1, 64)
    """
    name, _, kwargs = model.partition("(")
    overrides = dict(item.split("=", 1) for item in kwargs.rstrip(")").split(",") if "=" in item)
    match = _MODEL.match(name)
    if not match:
        head = name.partition("_")[0]
        return family or head, model[len(head) + 1 :] or model, None, None
    depth = int(overrides.pop("depth", match["depth"]))
    dim = int(overrides.pop("embed_dim", match["dim"]))
    extra = ",".join(f"{k}={v}" for k, v in overrides.items())
    arch = f"{depth}-{dim}" + (f" ({extra})" if extra else "")
    return family or match["family"], arch, depth, dim


def arch_label(family: str, arch: str, epochs: int | None = None) -> str:
    """A backbone as the paper writes it: ``Spikformer-4-384`` or, with epochs, ``...-400E``.

    Example:
        >>> arch_label("spikformer", "1-64 (num_heads=4)", 8)
        'Spikformer-1-64-8E (num_heads=4)'
    """
    core, _, extra = arch.partition(" (")
    label = f"{family_label(family)}-{core}"
    if epochs is not None:
        label += f"-{epochs}E"
    return f"{label} ({extra}" if extra else label


@cache
def paper_tables() -> pd.DataFrame:
    """Every number of the paper's Tables 1-5, as shipped in ``reports/data/paper_tables.csv``."""
    source = resources.files("reports").joinpath("data", "paper_tables.csv")
    with source.open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, dtype={"time_steps": "string"})


def _paper_variant(table: int, method: str, family_name: str) -> str | None:
    for name in label_table.BUILTIN_ORDER:  # the paper's rows are the built-in variants
        if method == (variant_label(name) if table == 1 else method_label(family_name, name)):
            return name
    return None


@cache
def paper_reference() -> pd.DataFrame:
    """The paper's Spikformer/Spikingformer numbers keyed like our cells.

    Returns:
        One row per reported number with columns ``table, dataset, family, arch, depth, dim, T,
        epochs, variant, paper, paper_params_m``. ``epochs`` is missing where the paper does not
        state it (Table 4); such a row matches runs of any length.
    """
    rows = []
    for rec in paper_tables().itertuples(index=False):
        if pd.isna(rec.backbone):
            continue  # another paper's method: quoted by the CML paper, not reproducible here
        match = _ARCH.match(rec.architecture)
        variant = _paper_variant(int(rec.table), rec.method, rec.backbone)
        if match is None or variant is None:
            raise ValueError(f"paper table {rec.table}: cannot read row {rec.method!r}")
        epochs = match["epochs"] or (None if pd.isna(rec.epochs) else int(rec.epochs))
        rows.append(
            {
                "table": int(rec.table),
                "dataset": _PAPER_DATASETS.get(rec.dataset, rec.dataset),
                "family": rec.backbone.lower(),
                "arch": f"{match['depth']}-{match['dim']}",
                "depth": int(match["depth"]),
                "dim": int(match["dim"]),
                "T": int(rec.time_steps),
                "epochs": None if epochs is None else int(epochs),
                "variant": variant,
                "paper": float(rec.top1),
                "paper_params_m": float(rec.params_m),
            }
        )
    frame = pd.DataFrame(rows)
    frame["epochs"] = frame["epochs"].astype("Int64")
    return frame


def paper_datasets() -> list[str]:
    """Our names of the datasets the paper reports, sorted."""
    return sorted(paper_reference()["dataset"].unique())


@dataclass(frozen=True)
class TableSpec:
    """How one of the paper's tables is laid out.

    Attributes:
        stem: Output file name without suffix.
        number: The paper's table number; ``None`` for a table of our runs only.
        title: First sentence of the caption.
        datasets: Our dataset names, one column group each (empty: every dataset the paper
            lacks).
        by_variant: Rows named by variant and backbone (Table 1), else by method and
            architecture (Tables 2-5).
        params: Add a "Param (M)" column.
        default_epochs: Architecture labels omit this training length (the paper's
            ``Spikformer-4-384`` is 300 epochs); ``None`` always shows it.
        epochs_in_rows: Runs of different lengths get rows of their own; ``False`` where the
            paper does not state epochs (Table 4) unless our runs differ within a dataset.
        family_order: Backbone families in the paper's row order.
    """

    stem: str
    number: int | None
    title: str
    datasets: tuple[str, ...]
    by_variant: bool = False
    params: bool = False
    default_epochs: int | None = None
    epochs_in_rows: bool = True
    family_order: tuple[str, ...] = ("spikformer", "spikingformer")


TABLES = (
    TableSpec(
        "table1",
        1,
        "The four downsampling variants on CIFAR10/100 (paper Table 1)",
        ("cifar10", "cifar100"),
        by_variant=True,
        family_order=("spikingformer", "spikformer"),
    ),
    TableSpec(
        "table2",
        2,
        "ImageNet, model sizes (paper Table 2)",
        ("imagenet",),
        params=True,
        default_epochs=300,
    ),
    TableSpec(
        "table3",
        3,
        "CIFAR10/100, model sizes (paper Table 3)",
        ("cifar10", "cifar100"),
        params=True,
        default_epochs=300,
    ),
    TableSpec(
        "table4",
        4,
        "Neuromorphic datasets at T=10/16 (paper Table 4)",
        ("cifar10_dvs", "dvs128_gesture"),
        epochs_in_rows=False,
    ),
    TableSpec("table5", 5, "Training length on CIFAR10 (paper Table 5)", ("cifar10",)),
)
OTHER = TableSpec(
    "table1_other", None, "The downsampling variants on datasets the paper does not report "
    "(our runs only, Table-1 layout)", (), by_variant=True,
)  # fmt: skip
