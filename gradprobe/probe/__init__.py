"""Gradient-landing probes: where does each pooling window route its gradient in x?

The paper's claim (sections 3.1-3.2) is about one thing: for every downsampling site, timestep
and pooling window, which element of the pre-spike map x (the BN output that feeds the neuron)
receives the window's gradient. ConvBN-LIF-MaxPool routes it to the first spiking position of
the window, eq. (7); ConvBN-MaxPool-LIF (CML) routes it to the argmax of x, eq. (11). A `Probe`
measures this during ordinary forward/backward passes of any ``nn.Module``.

Metrics, per site x timestep, over the pooling windows that routed a non-zero gradient (the
gradient arriving at the pool's output, ``dL/dy``, is non-zero; a window that routes nothing
cannot route it imprecisely, and counting it would dilute the measure with windows that do not
train anything):

``precision``
    Fraction of those windows whose *landing* (the position the pool's backward sends the
    window's gradient to: max-pool indices over the map the pool sees, with PyTorch's
    first-index tie rule) equals the window's argmax of x (first index on exact ties).
    ``lif_maxpool`` pools spikes, so its landing is eq. (7)'s; ``maxpool_lif`` pools x, so its
    precision is 1 by eq. (11). ``avgpool_lif`` has no single landing (the window's gradient is
    spread over every position), so precision is NaN; read ``mass_at_argmax`` instead.
``mass_at_argmax``
    Mean over those windows of the share of the window's routed |gradient| that lands on the
    argmax of x: 1 or 0 per window for max-pools (so it equals precision), and for average
    pools ``1 / n`` with ``n`` the window's real (non-padding) positions: 1/9 for interior
    3x3 windows, whatever ``count_include_pad`` says, because every real position gets the
    same ``dL/dy / divisor``.
``tie_rate``
    Fraction of those windows whose maximum, in the map the pool sees, is attained at more
    than one position: for max over binary spikes that is "several spikes or none", the case
    where eq. (7)'s first-index rule decides; for pools over x it counts exact ties of x,
    where eq. (11)'s argmax is itself decided by the first-index rule. Such ties are common
    at sites fed by spikes: every silent receptive field gives the same x.
``spike_rate``
    Mean output of the site's neuron at that timestep (all neurons, all samples).
``windows`` / ``windows_total``
    Windows that routed a non-zero gradient (the denominator above) / all windows.
``grad_abs_mean``
    Mean |dL/dx| over the map, the real gradient autograd delivers to x.

``strided_conv`` (and any site without a pool) has no window: the conv producing x already
downsamples and every position of x routes only its own gradient, so there is no choice of
position to measure. Precision, mass and tie rate are NaN, ``windows`` is 0; spike rate and
``grad_abs_mean`` are reported.

The package separates where a tensor is caught from what is computed on it:

* `gradprobe.probe.sites`: `find_sites`, which modules form a site (ours by type, foreign
  models by pattern);
* `gradprobe.probe.windows`: the window analysis as pure tensor functions, the one place
  eqs. (7) and (11) are measured;
* `gradprobe.probe.hooks`: the `Probe` object and `attach_probe`, its hooks and life cycle;
* `gradprobe.probe.records`: `SiteRecord`, `FRAME_COLUMNS`, `to_frame` and `summarize`.

Example:
    >>> import torch
    >>> from gradprobe.downsample import build_downsample
    >>> site = build_downsample("lif_maxpool", 3, 8)
    >>> with attach_probe(site) as probe:
    ...     site(torch.rand(2, 1, 3, 8, 8, requires_grad=True)).sum().backward()
    >>> list(summarize(probe.to_frame())["variant"])
    ['lif_maxpool']
"""

from gradprobe.probe.hooks import Probe, attach_probe
from gradprobe.probe.records import FRAME_COLUMNS, SiteRecord, sort_records, summarize, to_frame
from gradprobe.probe.sites import POOLS, Site, find_sites
from gradprobe.probe.windows import PoolGeometry, WindowMetrics, Windows, measure_windows

__all__ = [
    "FRAME_COLUMNS",
    "POOLS",
    "PoolGeometry",
    "Probe",
    "Site",
    "SiteRecord",
    "WindowMetrics",
    "Windows",
    "attach_probe",
    "find_sites",
    "measure_windows",
    "sort_records",
    "summarize",
    "to_frame",
]
