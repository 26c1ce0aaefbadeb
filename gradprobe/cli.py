"""``gradprobe`` command line: ``gradprobe probe`` measures where each variant lands its gradient.

For every requested variant the same untrained model (same seed, so the same initial weights)
runs forward and backward on the same images with a `gradprobe.probe.Probe` attached
(`gradprobe.compare.probe_variants`, which the notebooks use too). The loss
for backward is the cross-entropy of the model's logits (mean over T) against the true labels:
an untrained network's gradient is what the first training step would use, and the landing
question is about routing, not about how good the gradient is. The model runs in training mode
(BatchNorm normalises with the batch statistics, as in a training step); neuron state is reset
before every batch.

User errors (unknown model or variant, missing data, bad numbers) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from gradprobe.compare import probe_variants
from gradprobe.data import DataNotFoundError, load_digits, load_image_folder
from gradprobe.downsample import DOWNSAMPLES, list_downsamples
from gradprobe.models import MODELS, create_model
from gradprobe.probe import summarize
from gradprobe.registry import UnknownNameError

# CIFAR-10 channel statistics (spec section 4); applied to every image source.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
TABLE_COLUMNS = [
    "site",
    "variant",
    "precision",
    "mass_at_argmax",
    "tie_rate",
    "spike_rate",
    "windows",
]


class UserError(Exception):
    """A problem with the command line or the inputs: reported in one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block) and exit with status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(name: str):
    """An argparse ``type`` accepting integers >= 1; the error names the flag and the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        return value

    return parse


def _path(name: str):
    def parse(text: str) -> Path:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{name} is empty ({text!r}): give a folder")
        return Path(text)

    return parse


def _model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="gradprobe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    p = sub.add_parser(
        "probe",
        help="measure gradient landing per site and variant",
        description="Run each downsampling variant on the same images and print, per site, "
        "landing precision, gradient mass at the argmax of x, tie rate and spike rate.",
    )
    p.add_argument(
        "--data",
        type=_path("--data"),
        default=None,
        help="ImageFolder root (class sub-folders), or a parent holding test/; "
        "default: scikit-learn's bundled handwritten digits (no download)",
    )
    p.add_argument(
        "--num-images",
        type=positive_int("--num-images"),
        default=256,
        help="images to use (a seeded random subset; default 256)",
    )
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=64)
    p.add_argument(
        "--model",
        default="sps_tokenizer_cifar",
        help="registered model (gradprobe.models.list_models())",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_model_arg,
        help="extra model argument, e.g. embed_dim=384 (repeatable)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        metavar="VARIANT",
        help=f"variants to compare (default all: {' '.join(list_downsamples())})",
    )
    p.add_argument("--T", type=positive_int("--T"), default=4, help="time steps (default 4)")
    p.add_argument("--seed", type=int, default=0, help="weights and image subset (default 0)")
    p.add_argument(
        "--out",
        type=_path("--out"),
        default=Path("probe_results"),
        help="folder for probe_rows.csv, probe_summary.csv, probe_summary.json",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


@dataclass
class _Job:
    model: str
    model_kwargs: dict
    variants: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    source: str


def _prepare(args: argparse.Namespace) -> _Job:
    MODELS.get(args.model)  # an unknown name raises with the choices
    variants = [v for item in (args.variants or list_downsamples()) for v in item.split(",") if v]
    for v in variants:
        DOWNSAMPLES.get(v)
    try:
        kwargs = dict(args.model_arg)
        probe_model = create_model(args.model, downsample=variants[0], T=args.T, **kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot build model {args.model!r}: {err}") from None
    size, channels = probe_model.img_size, probe_model.in_channels
    if args.data is None:
        images, labels = load_digits(train=False, size=size or 32, channels=channels)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(args.seed))
        keep = order[: args.num_images].sort().values
        images, labels, classes = images[keep], labels[keep], 10
        source = "digits (scikit-learn, test split)"
    else:
        root = args.data
        if not root.exists():
            raise DataNotFoundError(f"data path {str(root)!r} does not exist")
        if (root / "test").is_dir():
            root = root / "test"
        images, labels, names = load_image_folder(
            root, limit=args.num_images, size=size, seed=args.seed
        )
        classes, source = len(names), str(root)
    if images.shape[1] != channels:
        raise UserError(
            f"model {args.model!r} expects {channels} input channels, the images have {images.shape[1]}"
        )
    return _Job(args.model, kwargs, variants, images, labels, classes, source)


def _normalize(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255
    if x.shape[1] == len(MEAN):
        x = (x - torch.tensor(MEAN).view(1, -1, 1, 1)) / torch.tensor(STD).view(1, -1, 1, 1)
    return x


def run_probe(job: _Job, T: int, batch_size: int, seed: int, progress: bool = True) -> pd.DataFrame:
    """Probe every variant of ``job`` and return the tidy frame of all of them."""
    from tqdm.auto import tqdm

    steps = math.ceil(len(job.labels) / batch_size) * len(job.variants)
    bar = tqdm(
        total=steps, disable=not progress or steps <= 1 or None, unit="batch", file=sys.stderr
    )

    def advance(variant: str) -> None:
        bar.set_postfix_str(variant)
        bar.update()

    with bar:
        return probe_variants(
            job.model,
            _normalize(job.images),
            job.labels,
            downsamples=job.variants,
            seed=seed,
            batch_size=batch_size,
            on_step=advance,
            T=T,
            num_classes=job.num_classes,
            **job.model_kwargs,
        ).frame


def _format_table(summary: pd.DataFrame) -> str:
    table = summary[TABLE_COLUMNS].copy()
    for col in ("precision", "mass_at_argmax", "tie_rate", "spike_rate"):
        table[col] = table[col].map(lambda v: "n/a" if pd.isna(v) else f"{v:.3f}")
    return table.to_string(index=False)


def cmd_probe(args: argparse.Namespace) -> int:
    try:
        job = _prepare(args)
    except (UnknownNameError, DataNotFoundError, UserError) as err:
        print(f"gradprobe probe: error: {err}", file=sys.stderr)
        return 2
    frame = run_probe(job, args.T, args.batch_size, args.seed, progress=not args.no_progress)
    frame.insert(0, "model", job.model)
    summary = summarize(frame, by=("site", "variant"))
    print(
        f"model {job.model}, T={args.T}, {len(job.labels)} images from {job.source}, "
        f"seed {args.seed}; loss: cross-entropy of the untrained model's logits"
    )
    print(_format_table(summary))
    print(
        "precision: share of gradient-carrying windows whose gradient lands on the argmax of "
        "x; n/a: no single landing (avg-pool spreads it) or no window (strided conv)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "probe_rows.csv", index=False)
    summary.to_csv(args.out / "probe_summary.csv", index=False)
    doc = {
        "model": job.model,
        "model_kwargs": job.model_kwargs,
        "T": args.T,
        "seed": args.seed,
        "images": len(job.labels),
        "source": job.source,
        "batch_size": args.batch_size,
        "variants": job.variants,
        "loss": "cross_entropy(untrained logits, labels)",
        "summary": json.loads(summary.to_json(orient="records")),
    }
    (args.out / "probe_summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out / 'probe_rows.csv'}, probe_summary.csv, probe_summary.json")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gradprobe`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        return cmd_probe(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
