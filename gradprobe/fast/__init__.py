"""How a step is made fast, kept apart from what the network computes.

The models in `gradprobe.models` say what a network computes; this package makes the same
network step faster (the fast path) or compute exactly as the official code does (reference
mode), by swapping module classes in place from outside (`gradprobe.fast.swap`). Nothing else
in `gradprobe` imports it (``tests/test_fast_boundary.py``). A harness calls `configure` once
and steps the model as the returned `StepPlan` says; ``README.md`` beside this file says what
each mode does and which test backs each claim.

Modules: `plan` (`configure`, `StepPlan`, the LIF kernel choice), `swap`, `fused_lif`,
`kernels`, `autograd` and `layers` (token Linears, convolutions), `token_stream`, `rows_bn`,
`cl_pool`, `reference_mode` (with
`LoopLIFNode`), `cuda_graph` (`CUDAGraphStep`) and `allocator` (an explicit opt-in).

Names are loaded from their modules on first use (PEP 562), so importing the package is light.

Example:
    >>> from gradprobe import fast
    >>> fast.MODES
    ('fast', 'reference')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradprobe._lazy import lazy_attributes

#: The modes `configure` accepts (``trainer.mode``).
MODES = ("fast", "reference")

_EXPORTS = {
    "AMP_DTYPES": "gradprobe.fast.plan",
    "PRECISIONS": "gradprobe.fast.plan",
    "Mode": "gradprobe.fast.plan",
    "StepPlan": "gradprobe.fast.plan",
    "configure": "gradprobe.fast.plan",
    "cpu_has_native_bf16": "gradprobe.fast.plan",
    "default_device": "gradprobe.fast.plan",
    "set_lif_kernel": "gradprobe.fast.plan",
    "CUDAGraphStep": "gradprobe.fast.cuda_graph",
    "graph_pool_mib": "gradprobe.fast.cuda_graph",
    "supports_cuda_graph": "gradprobe.fast.cuda_graph",
    "FusedLIFNode": "gradprobe.fast.fused_lif",
    "LoopLIFNode": "gradprobe.fast.reference_mode",
    "FastConv1d": "gradprobe.fast.layers",
    "FastConv2d": "gradprobe.fast.layers",
    "FastPointwiseBN": "gradprobe.fast.layers",
    "FastMaxPool2d": "gradprobe.fast.cl_pool",
    "restore_modules": "gradprobe.fast.swap",
    "swap_modules": "gradprobe.fast.swap",
}

#: Submodules, importable as attributes too (``fast.rows_bn.available()``).
_SUBMODULES = (
    "allocator",
    "autograd",
    "cl_pool",
    "cuda_graph",
    "fused_lif",
    "kernels",
    "layers",
    "plan",
    "reference_mode",
    "rows_bn",
    "swap",
    "token_stream",
)

__all__ = [
    "AMP_DTYPES",
    "MODES",
    "PRECISIONS",
    "CUDAGraphStep",
    "FastConv1d",
    "FastConv2d",
    "FastMaxPool2d",
    "FastPointwiseBN",
    "FusedLIFNode",
    "LoopLIFNode",
    "Mode",
    "StepPlan",
    "configure",
    "cpu_has_native_bf16",
    "default_device",
    "graph_pool_mib",
    "restore_modules",
    "set_lif_kernel",
    "supports_cuda_graph",
    "swap_modules",
]

if TYPE_CHECKING:
    from gradprobe.fast.cl_pool import FastMaxPool2d
    from gradprobe.fast.cuda_graph import CUDAGraphStep, graph_pool_mib, supports_cuda_graph
    from gradprobe.fast.fused_lif import FusedLIFNode
    from gradprobe.fast.layers import FastConv1d, FastConv2d, FastPointwiseBN
    from gradprobe.fast.plan import (
        AMP_DTYPES,
        PRECISIONS,
        Mode,
        StepPlan,
        configure,
        cpu_has_native_bf16,
        default_device,
        set_lif_kernel,
    )
    from gradprobe.fast.reference_mode import LoopLIFNode
    from gradprobe.fast.swap import restore_modules, swap_modules


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS, _SUBMODULES)
