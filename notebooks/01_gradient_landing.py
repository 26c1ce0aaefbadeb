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
# # 01 · Where does the gradient land?
#
# A downsampling site is a ConvBN whose output, the **pre-spike map x**, reaches a spiking
# neuron and a 2x reduction. Section 3.1 of the CML paper follows one pooling window backward:
#
# * **ConvBN-LIF-MaxPool** (Spikformer's baseline) max-pools the *spikes*. Every spike is a
#   maximum, PyTorch keeps the first one, so the window's gradient lands on the **first spiking
#   position**, whatever x holds there: eq. (7).
# * **ConvBN-MaxPool-LIF** (CML) max-pools *x* and spikes afterwards, so the gradient lands on
#   the **argmax of x**, the position with the most feature information: eq. (11).
#
# We watch this three times, each larger than the last: one hand-made window, one site on real
# images, and a whole Spikformer on a CIFAR-10 batch. The probe (`gradprobe.probe`) reads the
# landing from the pooling kernels during an ordinary backward pass; `gradprobe.theory`
# computes eqs. (7) and (11) from the equations alone; the figures come from `gradprobe.plots`.

# %% tags=["parameters"]
import os

N_IMAGES = 8  # CIFAR-10 test images (the embedded digits when the JPEG folder is absent)
T = 4  # time steps, the references' CIFAR setting
BACKBONE = "spikformer_4_384_cifar"  # the backbone of the paper's Table 1
SEED = 0  # weights and the image draw
# Dataset root holding cifar10-jpeg/: $GRADPROBE_DATA, else the harness's paths.data default
# (../shared/data beside the checkout) seen from notebooks/; without it, the embedded digits.
DATA = os.environ.get("GRADPROBE_DATA", "../../shared/data")

# %%
import torch

from gradprobe import theory
from gradprobe.downsample import build_downsample
from gradprobe.explore import example_images, passthrough_site, probe_variants
from gradprobe.plots import plot_site_maps, plot_timestep_metrics, plot_window
from gradprobe.probe import summarize

# %% [markdown]
# ## 1 · One pooling window
#
# A 3x3 window of x at one time step. The LIF neuron (tau 2, threshold 1, eqs. (3)-(5)) fires
# where x ≥ 2, so four positions spike and tie; the argmax (3.8) is not the first of them.
# `passthrough_site` builds each variant with an identity conv-BN and one pooling window, so
# the hand-made x is exactly what the neuron and the pool see.

# %%
window = torch.tensor(
    [
        [0.4, 2.3, -0.6],
        [2.6, 3.8, 1.1],
        [-0.9, 2.1, 0.2],
    ]
)
pooling = ["lif_maxpool", "maxpool_lif", "avgpool_lif"]  # strided_conv has no window
frame, records = probe_variants(
    passthrough_site, window[None, None, None], downsamples=pooling, keep_maps=True
)
spikes = records["lif_maxpool"][0].maps["spikes"][0, 0, 0]
grads = {v: records[v][0].maps["grad_x"][0, 0, 0] for v in pooling}
fig = plot_window(window, spikes, grads, title="One window, one time step: dL/dy = 1")

# %% [markdown]
# The probe's verdict on this window, and the paper's two equations computed from x alone
# (flat positions in the 3x3 window, row-major: 1 is the top middle, 4 the centre):

# %%
print("spikes, eqs. (3)-(5):", theory.lif_spikes(window[None])[0].flatten().int().tolist())
print("eq. (7),  first spike:", theory.first_spike_landing(spikes, 3, 3, 0).item())
print("eq. (11), argmax of x:", theory.argmax_landing(window, 3, 3, 0).item())
frame[["variant", "precision", "mass_at_argmax", "tie_rate", "spike_rate"]]

# %% [markdown]
# The baseline sends the whole gradient to x = 2.3 (position 1), CML to x = 3.8 (position 4),
# and the average pool spreads it evenly: 1/9 lands on the argmax.
#
# ## 2 · One site on real images
#
# One downsampling site (`build_downsample(variant, 3, 8)`: conv 3→8, BN, then LIF and a
# MaxPool2d(3, 2, 1) in the variant's order), the same weights for every variant, the images
# repeated over T time steps. The loss is the sum of the site's output, so every window routes
# a gradient.

# %%
batch = example_images(N_IMAGES, root=DATA, seed=SEED)
print(f"{len(batch.labels)} images from {batch.source}:", [batch.classes[i] for i in batch.labels])
x_seq = batch.images[None].expand(T, -1, -1, -1, -1)  # [T, B, C, H, W]
frame, records = probe_variants(
    lambda v: build_downsample(v, 3, 8), x_seq, seed=SEED, keep_maps=True
)
summarize(frame, by=("variant",))

# %% [markdown]
# Sample 0, channel 0 at the last time step, zoomed on the top-left 16x16 (the fractions in
# the titles count every window of the map). White circles: each window's argmax of x. Crosses:
# where the variant lands the gradient, green on the argmax, red (joined to it) elsewhere.

# %%
base, cml = records["lif_maxpool"][0].maps, records["maxpool_lif"][0].maps
pick = (T - 1, 0, 0)  # time step, sample, channel
fig = plot_site_maps(
    base["x"][pick],
    base["argmax"][pick],
    {"lif_maxpool": base["landing"][pick], "maxpool_lif": cml["landing"][pick]},
    spikes=base["spikes"][pick],
    title=f"One site, t = {T - 1}: where each variant lands the gradient",
    region=(0, 16, 0, 16),
)

# %% [markdown]
# ### Eq. (7) vs eq. (11), side by side
#
# The same x, the two rules of the paper computed by `gradprobe.theory` without any pooling
# kernel: first spike (7) against argmax of x (11). The probe's measured landings agree with
# them on every window of every sample, channel and time step:

# %%
eq7 = theory.first_spike_landing(base["spikes"])
eq11 = theory.argmax_landing(base["x"])
print(f"eq. (7)  = baseline landing on {(eq7 == base['landing']).float().mean():.0%} of windows")
print(f"eq. (11) = CML landing on      {(eq11 == cml['landing']).float().mean():.0%} of windows")
print(f"eq. (7)  = eq. (11) on         {(eq7 == eq11).float().mean():.1%} of windows")
fig = plot_site_maps(
    base["x"][pick],
    eq11[pick],
    {"eq. (7): first spike": eq7[pick], "eq. (11): argmax of x": eq11[pick]},
    title="The paper's two landing rules on the same x",
    region=(0, 16, 0, 16),
)

# %% [markdown]
# ### Per time step
#
# Precision: the fraction of windows (that route a gradient) whose landing is the argmax of x.
# Tie rate: the fraction whose maximum, in the map the pool sees, is shared; for max over
# spikes that is "several spikes or none", exactly when eq. (7)'s first-index rule decides.
# The average pool has no single landing (no precision bar) and the strided conv no window.

# %%
fig = plot_timestep_metrics(frame, metrics=("precision", "tie_rate", "spike_rate"))

# %% [markdown]
# ## 3 · A Spikformer on a CIFAR-10 batch
#
# The paper's backbone at full size, untrained (BatchNorm on batch statistics, so neurons
# fire), one cross-entropy step per variant on the same batch and weights. Both of its
# downsampling sites are probed at every time step.

# %%
frame, records = probe_variants(
    BACKBONE, batch.images, batch.labels, seed=SEED, keep_maps=True, T=T
)
summarize(frame)

# %%
fig = plot_timestep_metrics(frame)

# %% [markdown]
# The first site's map for sample 0 at the last time step, in the channel where the baseline
# fires most (many channels of an untrained network are silent and flat), and eq. (7) on it:

# %%
base, cml = records["lif_maxpool"][0].maps, records["maxpool_lif"][0].maps
site = records["lif_maxpool"][0].site
channel = int(base["spikes"][T - 1, 0].mean((1, 2)).argmax())
pick = (T - 1, 0, channel)
fig = plot_site_maps(
    base["x"][pick],
    base["argmax"][pick],
    {
        "lif_maxpool": base["landing"][pick],
        "maxpool_lif": cml["landing"][pick],
        "eq. (7): first spike": theory.first_spike_landing(base["spikes"][pick]),
    },
    spikes=base["spikes"][pick],
    title=f"{BACKBONE}, site {site}, channel {channel}, t = {T - 1}",
    region=(0, 16, 0, 16),
)

# %% [markdown]
# With untrained weights the baseline lands on the argmax of x in only a fraction of windows,
# and most of its windows tie; CML's precision is 1 by construction, at every site and time
# step. Notebook 02 repeats this for every backbone, and notebook 03 follows precision through
# training.
