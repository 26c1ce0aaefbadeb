# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Explore a finished sweep
#
# The mechanism of notebooks 01-02, next to its outcome. A sweep of the Hydra harness
# (`python -m ablations.train -m ...`) leaves one run document per run in
# `<sweep dir>/results/` (schema in `ablations/store.py`), with the per-epoch history and the
# probe snapshots taken during training. This notebook reads such a store with `reports`,
# plots gradient-landing precision during training against accuracy, and builds the paper's
# Table 1 and Fig. 2 from it.
#
# By default it opens the quickstart (`python -m ablations.train -m experiment=quickstart`:
# the four variants, a one-block Spikformer, the embedded digits, a few CPU minutes). Without
# that store it runs the quickstart itself, shortened by the parameters below, into a sweep
# dir of its own (`<sweep>_small`), so that a later full quickstart is not mixed with it.
# Set `SWEEP = "reports/repro_table1_mini"` (a path from the checkout) to explore the
# project's committed study instead: Table 1 at reduced scale on the real CIFAR-10, 24 runs.

# %% tags=["parameters"]
SWEEP = None  # a sweep dir (or its results/ folder); None: the quickstart's, sweeps/quickstart
EPOCHS = 4  # the shortened quickstart (run only without a store): epochs,
STEPS_PER_EPOCH = 25  # training steps per epoch (the full quickstart: 8 x 45),
TEST_IMAGES = 360  # test images per evaluation (all of the digits test split)
OUT = None  # where reports writes the tables and figures; None: <sweep>/report

# %%
import subprocess
import sys
from pathlib import Path

from IPython.display import Image, Markdown, display

import ablations
from ablations.store import iter_runs
from reports.build import build_report
from reports.figures import plot_precision_vs_accuracy
from reports.load import load_results
from reports.precision import snapshots

checkout = Path(ablations.__file__).resolve().parents[1]  # where `python -m ablations` runs
sweep = checkout / (SWEEP or "sweeps/quickstart")  # relative paths: from the checkout

# %%
if next(iter_runs(sweep), None) is None:
    sweep = sweep.with_name(f"{sweep.name}_small")
    if next(iter_runs(sweep), None) is None:
        command = [
            sys.executable, "-m", "ablations.train", "-m", "experiment=quickstart",
            f"paths.sweeps={sweep.parent}", f"experiment_name={sweep.name}",
            f"trainer.epochs={EPOCHS}", f"trainer.max_steps_per_epoch={STEPS_PER_EPOCH}",
            f"probe.every={STEPS_PER_EPOCH // 2 or 1}", f"dataset.limit_test={TEST_IMAGES}",
            "trainer.progress=none",
        ]  # fmt: skip
        print(" ".join(command[1:]))
        subprocess.run(command, cwd=checkout, check=True)
print("sweep:", sweep)

# %% [markdown]
# ## The runs
#
# `load_results` reads every document; only finished runs are averaged (`problem` says why
# another is not). `acc` is the final-epoch test top-1 (%).

# %%
results = load_results(sweep)
results.runs[["variant", "model", "dataset", "seed", "status", "epochs_done", "acc", "problem"]]

# %% [markdown]
# ## Precision during training, against accuracy
#
# Probe snapshots reduced over time steps per site (`reports.precision.snapshots`), then
# averaged over sites and seeds per epoch. "Mass at argmax" is the share of each window's
# gradient that lands on the argmax of x: the precision for max-pools, 1/9 for a 3x3 average
# pool; the strided conv has no window and no point.

# %%
snaps = snapshots(results)
fig = plot_precision_vs_accuracy(snaps, results.history)

# %% [markdown]
# ## Table 1 and Fig. 2, by `reports`
#
# `build_report` writes every table the store can fill, the figures and a coverage summary,
# as `python -m reports build --results <sweep> --out <dir>` does. Table 1 proper holds
# CIFAR-10/100 runs; runs on other datasets (the quickstart's digits) get its layout in
# `table1_other`. The precision table puts each site's first and last snapshot beside the
# accuracy.

# %%
out = Path(OUT) if OUT else sweep / "report"
report = build_report(sweep, out)
print(report.coverage)

# %%
for stem in ("table1", "table1_other", "precision"):
    if (out / f"{stem}.md").exists():
        display(Markdown((out / f"{stem}.md").read_text()))

# %%
for png in sorted(out.glob("fig2_*.png")) + sorted(out.glob("precision_*.png")):
    display(Markdown(f"`{png.name}`"), Image(filename=png))
