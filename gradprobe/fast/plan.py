"""One switch between the fast path and an honest reference mode, for any gradprobe backbone.

``configure(model, mode="fast")`` is what a training harness calls once after building a model
(and before building its optimizer, since it may move the model to the device). It swaps module
classes in place (`gradprobe.fast.swap`; parameters, state dicts and probe hooks stay) and
returns a `StepPlan` that says how to step the model. In fast mode:

* every LIF becomes a `gradprobe.fast.FusedLIFNode` (`gradprobe.fast.fused_lif`): on CPU one
  fused kernel per call, TorchInductor's C++ build where a compiler is found, spikes
  bit-identical to the per-timestep loop; on CUDA spikingjelly's fused CUDA/Triton kernels;
* modules run their own forwards (broadcast input over T, no copy-back reshapes, attention as
  ``Q·(Kᵀ·V)``);
* on CPU the token Linears and their BatchNorms (`gradprobe.fast.layers.FastPointwiseBN`) read
  the token memory without a copy and normalise contiguous rows (`gradprobe.fast.rows_bn`, not ``exact``), with
  reference mode's forward bits; unless ``exact``, Spikformer's residual stream is held in
  token memory order (`gradprobe.fast.token_stream`); every max-pool pools through
  channels-last memory (`gradprobe.fast.cl_pool`, the same values, indices and gradients);
* on CPU, unless ``exact``, on a CPU with bfloat16 dot products (AVX512-BF16, AMX): the
  backward of every convolution and token matmul takes bfloat16 operands
  (`gradprobe.fast.autograd`) and the LIFs save their surrogate input in bfloat16. The forward
  is untouched: spikes and loss stay reference mode's bit for bit, and the tests hold gradients
  within 3 % per parameter tensor (``tests/test_fast.py``). ``exact=True`` keeps every gradient
  in float32 and every BatchNorm on reference mode's own kernels, backward included.

``configure(model, mode="reference")`` makes the same model compute the way the official code
does: per-timestep LIF loop, the references' reshapes and ``.contiguous()`` copies
(`gradprobe.fast.reference_mode`).

``precision`` is the one owner of the autocast dtype: ``"auto"`` is bfloat16 on CUDA in fast
mode (which changes spikes: BN outputs near the threshold round differently, so the bf16 path is
not held to spike identity), float16 on CUDA in reference mode (the official code's ``--amp``),
float32 on CPU; ``"fp32"``, ``"bf16"`` and ``"fp16"`` choose on any device (CPU autocast works
too: LIFs take bfloat16 input and keep float32 state).

Nothing here changes the process: glibc's allocator is tuned only by an explicit
`gradprobe.fast.allocator.retain_freed_memory` call. Switching back and forth is allowed.

Example:
    >>> from gradprobe.models import create_model
    >>> model = create_model("spikformer_4_384_cifar", downsample="maxpool_lif", T=4)
    >>> plan = configure(model, mode="fast", device="cpu")
    >>> with plan.autocast():
    ...     logits = model(plan.prepare(torch.rand(2, 3, 32, 32)))
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from spikingjelly.activation_based import layer, neuron
from torch import nn

from gradprobe.fast import MODES, allocator, cl_pool
from gradprobe.fast.fused_lif import FusedLIFNode
from gradprobe.fast.kernels import compiler_available
from gradprobe.fast.layers import FAST_CONVS, FastPointwiseBN
from gradprobe.fast.reference_mode import LoopLIFNode, install_reference_mode
from gradprobe.fast.swap import restore_modules, swap_modules
from gradprobe.fast.token_stream import install_token_stream
from gradprobe.models.layers import PointwiseBN

Mode = Literal["fast", "reference"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The autocast dtype of each explicit ``precision`` (``None``: float32, no autocast).
AMP_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
#: The LIF classes `set_lif_kernel` chooses between.
LIF_KERNELS = {"fused": FusedLIFNode, "loop": LoopLIFNode, "auto": neuron.LIFNode}


@dataclass(frozen=True)
class StepPlan:
    """How to run a training/eval step of a configured model.

    Attributes:
        mode: ``"fast"`` or ``"reference"``.
        device: Where the model lives.
        amp_dtype: Autocast dtype of forward + loss, or ``None`` for float32 (`configure`'s
            ``precision``).
        lif_kernel: The LIF implementation in use, for logs: ``"fused-inductor"``,
            ``"fused-eager"``, ``"spikingjelly-cuda"`` or ``"loop"``.
        reference_layout: Whether the references' reshapes are mirrored.
        lif_count: Number of LIF modules switched.
        exact: Whether every gradient is float32 and every BatchNorm runs reference mode's
            kernels (the CPU forward is reference mode's bit for bit either way).
        grad_precision: Precision of the backward's convolution and token-matmul operands and of
            the LIFs' saved surrogate input: ``"fp32"``, or ``"bf16"`` (float32 accumulation,
            bfloat16 results) in fast non-exact mode on a CPU with native bfloat16 dot products.
        retained_memory: Whether glibc keeps freed memory in this process (an explicit opt-in,
            `gradprobe.fast.allocator.retain_freed_memory`; `configure` never sets it).
        channels_last_pools: Whether the model's max-pools pool through channels-last memory
            (`gradprobe.fast.cl_pool`; fast mode on CPU, with TorchInductor).
    """

    mode: str
    device: torch.device
    amp_dtype: torch.dtype | None
    lif_kernel: str
    reference_layout: bool
    lif_count: int
    exact: bool = True
    grad_precision: str = "fp32"
    retained_memory: bool = False
    channels_last_pools: bool = False

    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """Context for forward + loss (a no-op in float32); ``cache=False`` while capturing a
        CUDA graph (autocast's cache of cast weights must not outlive the capture)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=cache)

    @property
    def fused_optimizer(self) -> bool:
        """Whether Adam/AdamW should step with PyTorch's fused CPU kernel: fast mode on CPU,
        unless exact (the per-tensor loop rounds as reference mode's optimiser does)."""
        return self.mode == "fast" and self.device.type == "cpu" and not self.exact

    @property
    def needs_grad_scaler(self) -> bool:
        """float16 autocast needs a ``torch.amp.GradScaler``; bfloat16 and float32 do not."""
        return self.amp_dtype == torch.float16

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the plan's device without a host sync (pin CPU batches upstream)."""
        return x.to(self.device, non_blocking=True)


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX), which make
    oneDNN's bfloat16 matmuls and convolutions 2-3x faster than float32 ones."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def set_lif_kernel(model: nn.Module, kernel: Literal["fused", "loop", "auto"], **options) -> int:
    """Switch every plain LIF of ``model`` to another kernel class in place.

    The classes share parameters, state and maths, so this only changes how spikes are computed.
    PLIF and other neuron types are left alone. `configure` picks the kernel by mode (fast:
    fused, reference: loop); this is the same swap for a model outside a plan.

    Args:
        model: Any module.
        kernel: ``"fused"`` (`FusedLIFNode`), ``"loop"`` (`LoopLIFNode`) or ``"auto"``
            (spikingjelly's ``LIFNode``, the model's own).
        **options: ``compiled=bool`` and ``bf16_margin=bool`` for the fused kernel.

    Returns:
        The number of neurons switched.

    Example:
        >>> from gradprobe.neuron import make_neuron
        >>> lif = make_neuron()
        >>> set_lif_kernel(lif, "loop"), type(lif).__name__
        (1, 'LoopLIFNode')
    """
    target = LIF_KERNELS[kernel]
    settings = {}
    if target is FusedLIFNode:
        settings = {name: bool(options.get(name, False)) for name in ("compiled", "bf16_margin")}
    return swap_modules(model, {neuron.LIFNode: target}, **settings)


def autocast_dtype(mode: str, device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of ``precision`` (``"auto"``: bfloat16 on CUDA in fast mode, float16
    on CUDA in reference mode, float32 elsewhere); ``None`` is float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choices: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return AMP_DTYPES[precision]
    if device.type != "cuda":
        return None
    return torch.bfloat16 if mode == "fast" else torch.float16


def configure(
    model: nn.Module,
    mode: Mode = "fast",
    *,
    device: str | torch.device | None = None,
    compile_kernels: bool | Literal["auto"] = "auto",
    precision: Precision = "auto",
    exact: bool = False,
) -> StepPlan:
    """Put ``model`` on ``device`` in fast or reference mode and say how to step it.

    Args:
        model: A gradprobe backbone (any module with spikingjelly LIFs works).
        mode: ``"fast"`` or ``"reference"`` (see the module docstring).
        device: Target device; ``None`` picks CUDA when present, else CPU.
        compile_kernels: Fast mode on CPU: build the fused LIF with TorchInductor (about 20 s
            once per process, cached on disk after; it pays within a few training steps).
            ``"auto"`` does so when a C++ compiler is found.
        precision: Autocast dtype of forward + loss (`StepPlan.amp_dtype`): ``"auto"`` (bf16
            on CUDA in fast mode, fp16 on CUDA in reference mode, fp32 on CPU), ``"fp32"``,
            ``"bf16"`` or ``"fp16"``.
        exact: Fast mode on CPU: every gradient in float32, every BatchNorm on reference
            mode's kernels (forward and backward) and the residual stream in reference
            mode's layout (so dense token matmuls). ``False`` (the default) gives the backward's
            convolutions and token matmuls bfloat16 operands on a CPU with native bfloat16 dot
            products: the forward (spikes, loss) stays reference mode's bit for bit and
            gradients agree within 3 % per parameter tensor (``tests/test_fast.py``).

    Returns:
        The `StepPlan` for the harness: wrap forward + loss in ``plan.autocast()``; use a
        GradScaler when ``plan.needs_grad_scaler``.

    Example:
        >>> from gradprobe.models import create_model
        >>> plan = configure(create_model("sps_tokenizer_cifar"), "reference", device="cpu")
        >>> plan.lif_kernel
        'loop'
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choices: {', '.join(MODES)}")
    device = torch.device(device) if device is not None else default_device()
    amp_dtype = autocast_dtype(mode, device, precision)
    model.to(device)
    restore_modules(model)  # every module its own class: the mode installs what it needs
    if mode == "reference":
        count = set_lif_kernel(model, "loop")
        layout = install_reference_mode(model)
        return StepPlan(
            mode=mode,
            device=device,
            amp_dtype=amp_dtype,
            lif_kernel="loop",
            reference_layout=layout,
            lif_count=count,
            retained_memory=allocator.is_retained(),
        )
    on_cuda = device.type == "cuda"
    compiled = (
        compiler_available() if compile_kernels == "auto" else bool(compile_kernels)
    ) and not on_cuda
    bf16_grads = not (on_cuda or exact) and cpu_has_native_bf16()
    count = set_lif_kernel(model, "fused", compiled=compiled, bf16_margin=bf16_grads)
    pools = False
    if not on_cuda:  # the CPU layers; on CUDA the model's own run
        options = dict(exact=bool(exact), bf16_grads=bf16_grads, compiled=compiled)
        swap_modules(model, {PointwiseBN: FastPointwiseBN}, **options)
        if not exact:
            install_token_stream(model)
        if bf16_grads:
            swap_modules(model, FAST_CONVS)
        switched = swap_modules(model, {layer.MaxPool2d: cl_pool.FastMaxPool2d})
        pools = switched > 0 and cl_pool.available()
    kernel = "spikingjelly-cuda" if on_cuda else ("fused-inductor" if compiled else "fused-eager")
    return StepPlan(
        mode=mode,
        device=device,
        amp_dtype=amp_dtype,
        lif_kernel=kernel,
        reference_layout=False,
        lif_count=count,
        exact=bool(exact),
        grad_precision="bf16" if bf16_grads else "fp32",
        retained_memory=allocator.is_retained(),
        channels_last_pools=pools,
    )
