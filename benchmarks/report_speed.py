"""Time the report build on a synthetic store of 1,000 runs × 400 epochs.

Usage::

    python benchmarks/report_speed.py [--runs 1000] [--epochs 400] [--figures]

The store (written to a temporary folder, not timed) spans every paper table: CIFAR10/100 at
three sizes, ImageNet at three, both DVS sets at T=10 and 16, the four variants, both families,
with probe snapshots every 10 epochs (4 sites × 4 time steps) and a few failed or unfinished
runs. The timed part is everything ``python -m reports build --no-figures`` does: reading the
store, the statistics and writing all tables (CSV, LaTeX, Markdown), the precision table and the
coverage summary; the budget is 5 s. With ``--figures`` the figures are timed separately.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from ablations.store import SCHEMA, write_run
from gradprobe.labels import BUILTIN_ORDER

CONFIGS = [  # (dataset, L_D, T)
    *[(d, m, 4) for d in ("cifar10", "cifar100") for m in ("4_256", "2_384", "4_384")],
    *[("imagenet", m, 4) for m in ("8_384", "8_512", "8_768")],
    *[(d, "2_256", t) for d in ("cifar10_dvs", "dvs128_gesture") for t in (10, 16)],
]
FAMILIES = ("spikformer", "spikingformer")
VARIANTS = BUILTIN_ORDER
SITES = ("stage1", "stage2", "stage3", "stage4")
STEMS = {"cifar10": "cifar", "cifar100": "cifar", "imagenet": "imagenet", "cifar10_dvs": "dvs",
         "dvs128_gesture": "dvs"}  # fmt: skip
CEILING = {"cifar10": 95.0, "cifar100": 78.0, "imagenet": 73.0, "cifar10_dvs": 80.0,
           "dvs128_gesture": 97.0}  # fmt: skip


def synthetic_run(index: int, n_epochs: int) -> dict:
    """One run document with plausible curves; deterministic in ``index``."""
    cells = [(c, f, v) for c in CONFIGS for f in FAMILIES for v in VARIANTS]
    (dataset, size, T), family, variant = cells[index % len(cells)]
    seed = index // len(cells)
    rng = np.random.default_rng(index)
    epochs = np.arange(n_epochs)
    ramp = 1 - np.exp(-(epochs + 1) / (n_epochs / 8))
    top1 = CEILING[dataset] * ramp + VARIANTS.index(variant) * 0.3 + rng.normal(0, 0.4, n_epochs)
    train_loss = 2.5 * (1 - ramp) + 0.3 + rng.normal(0, 0.02, n_epochs)
    test_loss = 2.5 * (1 - ramp) + 0.6 + rng.normal(0, 0.03, n_epochs)
    status, error = "finished", None
    if index % 97 == 13:
        status, error = "failed", "RuntimeError: CUDA out of memory"
    elif index % 89 == 7:
        status = "running"
    done = n_epochs if status == "finished" else n_epochs // 3
    history = [
        {"epoch": int(e), "train_loss": float(train_loss[e]), "train_top1": float(top1[e] - 1),
         "test_loss": float(test_loss[e]), "test_top1": float(top1[e]),
         "test_top5": float(min(99.9, top1[e] + 15)), "lr": 5e-4 * math.cos(e / n_epochs),
         "epoch_time_s": 30.0, "images_per_s": 1800.0}
        for e in range(done)
    ]  # fmt: skip
    exact = variant == "maxpool_lif"
    probe = [
        {"epoch": e, "step": e * 390, "site": site, "t": t,
         "precision": float("nan") if variant == "avgpool_lif" else
         (1.0 if exact else float(rng.uniform(0.2, 0.5))),
         "mass_at_argmax": 1.0 if exact else float(rng.uniform(0.1, 0.5)),
         "tie_rate": float(rng.uniform(0.3, 0.8)), "spike_rate": float(rng.uniform(0, 0.3)),
         "windows": 0 if variant == "strided_conv" else 4096}
        for e in range(0, done, 10) for site in SITES for t in range(4)
    ]  # fmt: skip
    model = f"{family}_{size}_{STEMS[dataset]}"
    return {
        "schema": SCHEMA, "run_id": f"run{index:05d}", "status": status, "error": error,
        "experiment": "benchmark", "model": model, "family": family, "downsample": variant,
        "dataset": dataset, "seed": seed, "T": T, "loss": "ce", "epochs_planned": n_epochs,
        "params": 9_320_000, "run_dir": f"runs/run{index:05d}", "config": {}, "versions": {},
        "git_sha": None, "device": "cpu", "history": history, "probe": probe,
        "final": None if status != "finished" else {
            "test_top1": history[-1]["test_top1"],
            "best_test_top1": max(h["test_top1"] for h in history),
            "test_top5": history[-1]["test_top5"], "test_loss": history[-1]["test_loss"],
            "epochs_done": done, "wall_time_s": 30.0 * done,
        },
    }  # fmt: skip


def make_store(root: Path, n_runs: int, n_epochs: int) -> Path:
    """Write ``n_runs`` synthetic run documents under ``root/results``."""
    for index in range(n_runs):
        write_run(root, synthetic_run(index, n_epochs))
    return root


def main(argv: list[str] | None = None) -> int:
    """Generate the store, time the build, print the times; exit 1 over the budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds for the tables")
    parser.add_argument("--figures", action="store_true", help="also time the figures")
    args = parser.parse_args(argv)

    from reports.build import build_report

    with tempfile.TemporaryDirectory() as tmp:
        sweep = make_store(Path(tmp) / "sweep", args.runs, args.epochs)
        size = sum(p.stat().st_size for p in (sweep / "results").glob("*.json")) / 2**20
        print(f"store: {args.runs} runs × {args.epochs} epochs, {size:.0f} MiB of JSON")
        start, cpu = time.perf_counter(), time.process_time()
        report = build_report(sweep, Path(tmp) / "out", figures=False)
        tables, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"tables (read + statistics + all table files): {tables:.2f} s wall, {cpu:.2f} s CPU "
            f"[{len(report.files)} files; budget {args.budget:.1f} s wall]"
        )
        if args.figures:
            start = time.perf_counter()
            report = build_report(sweep, Path(tmp) / "out_fig", figures=True)
            print(f"full build with figures (timed separately): "
                  f"{time.perf_counter() - start:.2f} s [{len(report.files)} files]")  # fmt: skip
    return 0 if tables <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())
