"""gradprobe: see where spiking downsampling modules route their gradient.

The public API is importable from the package root; each name is loaded from its module on
first use (PEP 562), so ``import gradprobe`` stays light and no submodule import can cycle
back through this file.

Example:
    >>> import gradprobe
    >>> gradprobe.list_downsamples("*_lif")
    ['avgpool_lif', 'maxpool_lif']
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from gradprobe._lazy import lazy_attributes

try:
    __version__ = version("gradprobe")
except PackageNotFoundError:  # run from a source checkout that was never installed
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "build_downsample": "gradprobe.downsample",
    "list_downsamples": "gradprobe.downsample",
    "register_downsample": "gradprobe.downsample",
    "PoolSpec": "gradprobe.downsample",
    "NeuronConfig": "gradprobe.neuron",
    "make_neuron": "gradprobe.neuron",
    "create_model": "gradprobe.models",
    "list_models": "gradprobe.models",
    "register_model": "gradprobe.models",
    "attach_probe": "gradprobe.probe",
    "find_sites": "gradprobe.probe",
    "Probe": "gradprobe.probe",
    "summarize": "gradprobe.probe",
}

__all__ = [
    "NeuronConfig",
    "PoolSpec",
    "Probe",
    "__version__",
    "attach_probe",
    "build_downsample",
    "create_model",
    "find_sites",
    "list_downsamples",
    "list_models",
    "make_neuron",
    "register_downsample",
    "register_model",
    "summarize",
]

if TYPE_CHECKING:
    from gradprobe.downsample import (
        PoolSpec,
        build_downsample,
        list_downsamples,
        register_downsample,
    )
    from gradprobe.models import create_model, list_models, register_model
    from gradprobe.neuron import NeuronConfig, make_neuron
    from gradprobe.probe import Probe, attach_probe, find_sites, summarize


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)
