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
# # 02 · Every variant in every backbone
#
# Notebook 01 followed the gradient through one window, one site and one Spikformer. Here the
# same measurement runs over the whole registry: every CIFAR backbone at its real size, with
# each of the four downsampling variants, on the same few CIFAR-10 images and the same
# (untrained) weights. Per site we read
#
# * **precision**: windows whose gradient lands on the argmax of x (1 for CML by eq. (11));
# * **tie rate**: windows whose maximum, in the map the pool sees, is shared (for the baseline:
#   several spikes or none, where eq. (7)'s first-index rule picks the landing);
# * **LIF cost**: spiking neurons per image and time step at the site, and their ratio to the
#   baseline's (the paper: CML needs a quarter, section 3.2).
#
# The ImageNet and neuromorphic forms are only costed, on a tiny input. Last, captum's
# attribution at the site's pre-spike map x shows where each variant lets the gradient in.

# %% tags=["parameters"]
import os

N_IMAGES = 4  # CIFAR-10 test images per backbone x variant (digits when the JPEG folder is absent)
T = 4  # time steps of the CIFAR backbones
BACKBONES = ["*cifar"]  # registry names or patterns of the backbones probed at real size
OTHER_FORMS = ["*imagenet", "*dvs*"]  # forms whose LIF cost is counted on a tiny input
OTHER_IMG_SIZE = 32  # that tiny input's side (a multiple of 16)
ATTRIBUTION_BACKBONE = "spikformer_4_384_cifar"  # backbone of the captum maps
SEED = 0  # weights and the image draw
# Dataset root holding cifar10-jpeg/: $GRADPROBE_DATA, else the harness's paths.data default
# (../shared/data beside the checkout) seen from notebooks/; without it, the embedded digits.
DATA = os.environ.get("GRADPROBE_DATA", "../../shared/data")

# %%
import pandas as pd

from gradprobe.cost import cost_report
from gradprobe.explore import example_images, site_report, variant_attributions, variants
from gradprobe.models import list_models
from gradprobe.plots import plot_attributions, plot_site_heatmaps
from gradprobe.probe import summarize

backbones = [name for pattern in BACKBONES for name in list_models(pattern)]
other_forms = [name for pattern in OTHER_FORMS for name in list_models(pattern)]
batch = example_images(N_IMAGES, root=DATA, seed=SEED)
print(f"{len(batch.labels)} images from {batch.source};", len(backbones), "backbones probed")

# %% [markdown]
# ## Precision, tie rate and LIF cost per site
#
# `site_report` runs one probed cross-entropy step per variant (`probe_variants`) and adds
# `gradprobe.cost`'s neuron counts. One row per backbone, variant and site:

# %%
table = pd.concat(
    [site_report(name, batch.images, batch.labels, seed=SEED, T=T) for name in backbones],
    ignore_index=True,
)
table.round(3)

# %% [markdown]
# Blank cells are undefined: the average pool has no single landing (its gradient is spread,
# 1/9 at the argmax of a 3x3 window) and the strided conv has no window. Spikformer and
# Spikingformer share the SPS stem that holds both sites, so with the same seed and width
# their sites see the same x and the numbers coincide.

# %%
fig = plot_site_heatmaps(table, metrics=("precision", "tie_rate", "spike_rate", "lif_ratio"))

# %% [markdown]
# Over every backbone and site, window-weighted (`gradprobe.probe.summarize`):

# %%
summarize(table, by=("variant",)).drop(columns="grad_abs_mean").round(3)

# %% [markdown]
# ## ImageNet and neuromorphic forms: LIF cost only
#
# Neurons per site on a `OTHER_IMG_SIZE`-pixel input at T = 1 (counts scale with the input
# area; the ratio to the baseline does not depend on it). BatchNorm uses batch statistics.

# %%
other = pd.concat(
    [
        cost_report(name, T=1, img_size=OTHER_IMG_SIZE, bn_batch_stats=True, seed=SEED)
        for name in other_forms
    ],
    ignore_index=True,
)
sites = other[~other["scope"].isin(["all sites", "model"])]
sites.set_index(["model", "scope", "downsample"])["lif_neurons"].unstack()[variants()]

# %% [markdown]
# All sites of a model together, relative to the baseline:

# %%
other[other["scope"] == "all sites"].pivot(index="model", columns="downsample", values="lif_ratio")[
    variants()
]

# %% [markdown]
# ## Attributions at the pre-spike map
#
# captum's gradient x activation at the first site's x (the map the pooling windows cover),
# for the class of each image, averaged over time steps; brighter is larger |attribution|,
# each panel scaled to its own maximum. Same weights and images for the four variants.
# The max-pool variants let gradient into at most one position per window and time step (the
# baseline where spikes won the first-index tie, CML where x peaks); the average pool admits
# it everywhere in the window. The strided conv's x is already downsampled, drawn over the
# same extent. Where x is flat (dark, uniform image regions in an untrained network) CML's
# windows tie too, and both max-pools fall back on the first position of the window.

# %%
maps = variant_attributions(ATTRIBUTION_BACKBONE, batch.images, batch.labels, seed=SEED, T=T)
fig = plot_attributions(batch.images, maps, batch.labels, batch.classes)
