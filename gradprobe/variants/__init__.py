"""Downsampling variants beyond the paper's four: one module per variant, found by itself.

Every module of this package is imported when `gradprobe.downsample` is, so a variant is one
file here (its `gradprobe.downsample.register_downsample` builder) plus one YAML in
``ablations/conf/downsample/``; the registry, the probe, sweeps, cost tables and reports then
know it with no other edit.

A variant that computes the forward pass of another one and changes only where the backward
routes the gradient says so with ``forward_as`` (`gradprobe.downsample.forward_of`): the causal
ablations pair each such variant with its forward twin.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
