"""One switch between the fast path and an honest reference mode, for any gradprobe backbone.

``configure(model, mode="fast")`` is what a training harness calls once after building a model
(and before building its optimizer, since it may move the model to the device):

* every LIF becomes a `FusedLIFNode`: on CPU one fused kernel per call (a TorchInductor C++
  kernel when a compiler is available, else the same loop in eager ops); on CUDA spikingjelly's
  fused CUDA/Triton kernels. Spikes are bit-identical to the per-timestep loop;
* modules run their own forwards (broadcast input over T, no copy-back reshapes, attention as
  ``Q·(Kᵀ·V)``);
* on CPU the token Linears (``PointwiseBN`` of kind ``"linear"``, Spikformer CIFAR) become
  `FastPointwiseBN`: the forward computes reference mode's ``F.linear`` on the same contiguous
  ``[T·B, N, C]`` tokens, from their nonzero entries alone where few are nonzero
  (`gradprobe.sparse_linear`: the same fused multiply-adds in MKL's order, so the same bits;
  with a C++ toolchain and not ``exact``, else ``F.linear`` itself), and a float32 backward
  computes ``dX``,
  ``dW`` and ``db`` as a 1x1 convolution backward in oneDNN: PyTorch's CPU ``mm`` is MKL's
  sgemm, and oneDNN's 1x1 convolution on the same memory (a channels-last view, no copy) is up
  to 1.5x faster on an AVX-512 CPU (``benchmarks/gemm.py``);
* on CPU, unless ``exact=True``, Spikformer's residual stream is held in token memory order
  (``SpikingTransformer.token_stream``), so that the token Linears read it without a copy; the
  attention output and the stream's gradients keep that order too (no layout copies);
* on CPU the token BatchNorms normalise the contiguous ``[T·B·N, C']`` rows with
  `gradprobe.rows_bn` (4x faster than the references' BN on a transposed view, with the same
  statistics computed the same way, so the output is the same bit for bit; it needs
  TorchInductor, without which the transposed kernel stays);
* on CPU every spikingjelly ``MaxPool2d`` (the downsampling sites' pools) becomes
  `gradprobe.cl_pool.FastMaxPool2d`, which pools through channels-last memory: ATen's
  channels-last kernel is vectorised where its NCHW kernel branches per element (forward and
  backward 2.3-2.6x faster on CML's real-valued maps, ``benchmarks/gemm.py``), and values,
  indices (the first-maximum rule) and gradients are the plain call's bit for bit; it needs
  TorchInductor for the layout moves, without which the plain call stays;
* on CPU, unless ``exact=True``, on a CPU with bfloat16 dot products (AVX512-BF16, AMX): the
  backward of every convolution and token matmul takes bfloat16 operands (`_Conv`,
  `_TokenLinear`; oneDNN accumulates in float32 and rounds the results to bfloat16, which are
  then widened to float32), 1.8-3.0x faster than float32 (``benchmarks/gemm.py``), a token
  Linear whose input has few nonzeros sums its weight gradient over them in float32
  (`gradprobe.sparse_linear.weight_grad`), and the LIFs save their surrogate input
  ``H - V_th`` in bfloat16 (half the saved state). The forward
  is untouched: spikes and loss stay reference mode's bit for bit, and the tests hold gradients
  within 3 % per parameter tensor (``tests/test_fast.py``). ``exact=True`` keeps every gradient
  in float32 and every BatchNorm on reference mode's own kernels, backward included;
* on CPU (``retain_memory="auto"``), glibc keeps freed memory for reuse instead of unmapping
  it (`gradprobe.allocator`): the next step's large tensors then take no page faults. This is
  process-wide and stays for the life of the process; reference mode never sets it;
* on CUDA the returned plan autocasts to bfloat16. That changes spikes (BN outputs near the
  threshold round differently), so the bf16 path is not held to spike identity. CPU autocast
  (``trainer.amp=bf16``) works too: LIFs take bfloat16 input and keep float32 state.

``configure(model, mode="reference")`` makes the same model compute the way the official code
does: per-timestep LIF loop, the references' reshapes and ``.contiguous()`` copies
(`gradprobe.reference_mode`), float16 autocast on CUDA (their ``--amp``), float32 on CPU.

Both modes keep parameters, state dicts and probe hooks; switching back and forth is allowed.

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
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from gradprobe import allocator, cl_pool, rows_bn, sparse_linear
from gradprobe.fused_lif import FusedLIFNode
from gradprobe.kernels import compiler_available
from gradprobe.models.layers import PointwiseBN, SpikingTransformer
from gradprobe.neuron import LoopLIFNode
from gradprobe.reference_mode import install_reference_forwards, remove_reference_forwards

MODES = ("fast", "reference")
Mode = Literal["fast", "reference"]
_LIF_CLASSES = (neuron.LIFNode, LoopLIFNode, FusedLIFNode)


@dataclass(frozen=True)
class StepPlan:
    """How to run a training/eval step of a configured model.

    Attributes:
        mode: ``"fast"`` or ``"reference"``.
        device: Where the model lives.
        amp_dtype: Autocast dtype of forward + loss, or ``None`` for float32.
        lif_kernel: The LIF implementation in use, for logs: ``"fused-inductor"``,
            ``"fused-eager"``, ``"spikingjelly-cuda"`` or ``"loop"``.
        reference_layout: Whether the references' reshapes are mirrored.
        lif_count: Number of LIF modules switched.
        exact: Whether every gradient is float32 and every BatchNorm runs reference mode's
            kernels (the CPU forward is reference mode's bit for bit either way).
        grad_precision: Precision of the backward's convolution and token-matmul operands and of
            the LIFs' saved surrogate input: ``"fp32"``, or ``"bf16"`` (float32 accumulation,
            bfloat16 results) in fast non-exact mode on a CPU with native bfloat16 dot products.
        retained_memory: Whether glibc keeps freed memory in the process
            (`gradprobe.allocator.retain_freed_memory`), set by fast mode on CPU.
        channels_last_pools: Whether the model's max-pools pool through channels-last memory
            (`gradprobe.cl_pool`; fast mode on CPU, with TorchInductor).
        sparse_token_matmul: Whether the token Linears' forward skips zero inputs with
            `gradprobe.sparse_linear` (the same bits; fast mode on CPU with a C++ toolchain,
            unless exact, for models with token Linears: Spikformer CIFAR).
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
    sparse_token_matmul: bool = False

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


def _grad_result(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.float() if t is not None else None


class _TokenLinear(torch.autograd.Function):
    """``F.linear`` on contiguous tokens ``[M, N, C]``. Backward in float32 as a oneDNN 1x1
    convolution backward (up to 1.5x faster than MKL's sgemm); with ``bf16_grads`` as two
    bfloat16 matmuls (oneDNN: float32 accumulation, bfloat16 results widened to float32), which
    beat the bfloat16 convolution by skipping its layout reorders. With ``sparse`` the forward
    skips zero inputs (`gradprobe.sparse_linear.linear`, the same bits), and with
    ``bf16_grads`` so does the weight gradient where few inputs are nonzero
    (`gradprobe.sparse_linear.weight_grad`: float32 sums, more precise than the bfloat16
    matmul; the float32 backward keeps oneDNN's, whose rounding ``exact`` runs reproduce)."""

    @staticmethod
    def forward(ctx, x, weight, bias, bf16_grads=False, sparse=False):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.bf16 = bf16_grads
        ctx.sparse = sparse
        if sparse:  # the same bits, zero inputs skipped
            return sparse_linear.linear(x, weight, bias)
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        M, N, C = x.shape
        out = weight.shape[0]
        bias_grad = ctx.has_bias and ctx.needs_input_grad[2]
        gw = None
        if ctx.sparse and ctx.bf16 and ctx.needs_input_grad[1]:  # float32 sums over nonzeros
            gw = sparse_linear.weight_grad(x.reshape(M * N, C), grad_y.reshape(M * N, out))
        if ctx.bf16:
            g2 = grad_y.reshape(M * N, out).to(torch.bfloat16)
            gx = gb = None
            if ctx.needs_input_grad[0]:
                gx = torch.mm(g2, weight.to(torch.bfloat16)).float().view(M, N, C)
            if ctx.needs_input_grad[1] and gw is None:
                gw = torch.mm(g2.t(), x.reshape(M * N, C).to(torch.bfloat16)).float()
            if bias_grad:  # summed in float32
                gb = grad_y.sum((0, 1))
            return gx, gw, gb, None, None
        grad_y = grad_y.contiguous()
        # [M, N, C] memory read as a channels-last [M, C, N, 1] map: no copy.
        x4 = x.view(M, N, 1, C).permute(0, 3, 1, 2)
        g4 = grad_y.view(M, N, 1, out).permute(0, 3, 1, 2)
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias_grad]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g4, x4, weight[:, :, None, None], [out], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask
        )
        gx = gx.permute(0, 2, 3, 1).reshape(M, N, C) if gx is not None else None
        gw = gw.reshape(out, C) if gw is not None else None
        return gx, gw, gb, None, None


class _Conv(torch.autograd.Function):
    """``aten.convolution`` in float32; backward with bfloat16 operands (oneDNN, float32
    accumulation, bfloat16 results widened to float32), the bias gradient summed in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        zeros = [0] * len(stride)
        return torch.ops.aten.convolution(
            x, weight, bias, stride, padding, dilation, False, zeros, groups
        )

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad_y.to(torch.bfloat16),
            x.to(torch.bfloat16),
            weight.to(torch.bfloat16),
            None,
            stride,
            padding,
            dilation,
            False,
            [0] * len(stride),
            groups,
            mask,
        )
        dims = [0, *range(2, grad_y.dim())]
        gb = grad_y.sum(dims) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return _grad_result(gx), _grad_result(gw), gb, None, None, None, None


class _FastConvMixin:
    """``_conv_forward`` through `_Conv` for float32 training steps on CPU."""

    def _conv_forward(self, input, weight, bias):
        if (
            input.device.type != "cpu"
            or input.dtype != torch.float32
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
            or not torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu")
        ):
            return super()._conv_forward(input, weight, bias)
        return _Conv.apply(
            input,
            weight,
            bias,
            list(self.stride),
            list(self.padding),
            list(self.dilation),
            self.groups,
        )


class FastConv2d(_FastConvMixin, layer.Conv2d):
    """spikingjelly ``Conv2d`` with bfloat16-operand gradients on CPU (see `_Conv`)."""


class FastConv1d(_FastConvMixin, layer.Conv1d):
    """spikingjelly ``Conv1d`` with bfloat16-operand gradients on CPU (see `_Conv`)."""


_FAST_CONVS = {layer.Conv2d: FastConv2d, layer.Conv1d: FastConv1d}


def set_convs(model: nn.Module, bf16_grads: bool) -> int:
    """Switch spikingjelly convolutions between their own class and the bf16-gradient one."""
    count = 0
    for module in model.modules():
        kind = type(module)
        base = next((b for b, f in _FAST_CONVS.items() if kind in (b, f)), None)
        if base is not None:
            module.__class__ = _FAST_CONVS[base] if bf16_grads else base
            count += 1
    return count


class FastPointwiseBN(PointwiseBN):
    """`PointwiseBN` whose ``"linear"`` kind (Spikformer CIFAR's tokens) runs fast on CPU.

    Same parameters and maths as `PointwiseBN`. The Linear runs on the ``[T·B, N, C]`` token
    memory (a view of channels-last maps, no copy) with the backward of `_TokenLinear`; with
    ``sparse`` its forward (training and eval) skips zero inputs and keeps ``F.linear``'s bits
    (`gradprobe.sparse_linear`); under CPU autocast it is oneDNN's bfloat16 matmul. The
    BatchNorm runs on the contiguous ``[T·B·N, C']`` rows with
    `gradprobe.rows_bn.rows_batch_norm`, whose output is reference mode's (BN on the transposed
    view) bit for bit, 4x faster. ``exact`` (class attribute or per instance) keeps reference
    mode's own BatchNorm kernel and float32 backward instead; so does the absence of
    TorchInductor (``compiled`` false). Under CPU autocast BN runs on the rows with ATen's
    kernel (bfloat16 is not held to reference mode's bits anyway).
    """

    exact: bool = True
    bf16_grads: bool = False
    compiled: bool = False
    sparse: bool = False

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        proj, bn = self.proj, self.bn
        autocast = torch.is_autocast_enabled("cpu")
        grad = torch.is_grad_enabled()
        if (
            self.kind != "linear"
            or x_seq.device.type != "cpu"
            or not (x_seq.dtype == torch.float32 or (x_seq.dtype == torch.bfloat16 and autocast))
            or proj._forward_hooks
            or proj._forward_pre_hooks
        ):
            return super().forward(x_seq)
        T, B, C, H, W = x_seq.shape
        # [T·B, N, C] tokens: a view when x_seq is channels-last (a FastPointwiseBN output)
        tokens = x_seq.flatten(3).transpose(-1, -2).reshape(T * B, H * W, C)
        if grad and not autocast:
            y = _TokenLinear.apply(tokens, proj.weight, proj.bias, self.bf16_grads, self.sparse)
        else:  # sparse_linear.linear is F.linear under autocast
            linear = sparse_linear.linear if self.sparse else torch.nn.functional.linear
            y = linear(tokens, proj.weight, proj.bias)
        rows = y.view(-1, y.shape[-1])  # [T·B·N, C']
        if not (bn._forward_hooks or bn._forward_pre_hooks):
            if autocast:
                y = nn.BatchNorm1d.forward(bn, rows)
            elif not self.exact and self.compiled and bn.affine and rows_bn.available():
                y = rows_bn.rows_batch_norm(bn, rows, samples=T * B)
            else:
                y = None
            if y is not None:  # rows back to [T, B, C', H, W] (channels-last memory)
                return y.view(T, B, H * W, -1).transpose(-1, -2).reshape(T, B, -1, H, W)
        # BN on the transposed view, as reference mode (and the official code) normalises it:
        # the same strides take the same kernel, so the statistics round the same way.
        y = rows.view(T, B, H * W, -1).transpose(-1, -2)  # [T, B, C', N] view of [T·B, N, C']
        return bn(y).reshape(T, B, -1, H, W)


def set_pointwise(
    model: nn.Module,
    fast_kind: bool,
    exact: bool = True,
    bf16_grads: bool = False,
    compiled: bool = False,
    sparse: bool = False,
) -> int:
    """Switch every `PointwiseBN` between its own class and `FastPointwiseBN` (with ``exact``,
    ``bf16_grads``, ``compiled`` and ``sparse``)."""
    target = FastPointwiseBN if fast_kind else PointwiseBN
    count = 0
    for module in model.modules():
        if type(module) in (PointwiseBN, FastPointwiseBN):
            module.__class__ = target
            for name, value in (
                ("exact", exact),
                ("bf16_grads", bf16_grads),
                ("compiled", compiled),
                ("sparse", sparse),
            ):
                if fast_kind:
                    setattr(module, name, value)
                else:
                    module.__dict__.pop(name, None)
            count += 1
    return count


def set_token_stream(model: nn.Module, on: bool) -> int:
    """Hold the residual stream of every `SpikingTransformer` in token memory order
    (``token_stream``) where ``on`` and every pointwise layer of its blocks is a token Linear,
    so that those Linears read it without a copy; off elsewhere. Returns how many are on."""
    count = 0
    for module in model.modules():
        if isinstance(module, SpikingTransformer):
            kinds = {m.kind for m in module.blocks.modules() if isinstance(m, PointwiseBN)}
            module.token_stream = on and kinds == {"linear"}
            count += module.token_stream
    return count


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_lif_kernel(model: nn.Module, kernel: Literal["fused", "loop", "auto"], **options) -> int:
    """Switch every plain LIF of ``model`` to another kernel class in place.

    The classes share parameters, state and maths, so this only changes how spikes are computed.
    PLIF and other neuron types are left alone.

    Args:
        model: Any module.
        kernel: ``"fused"`` (`FusedLIFNode`), ``"loop"`` (`LoopLIFNode`) or ``"auto"``
            (spikingjelly's ``LIFNode``).
        **options: ``compiled=bool`` and ``bf16_margin=bool`` for the fused kernel.

    Returns:
        The number of neurons switched.
    """
    target = {"fused": FusedLIFNode, "loop": LoopLIFNode, "auto": neuron.LIFNode}[kernel]
    count = 0
    for module in model.modules():
        if type(module) in _LIF_CLASSES:
            module.__class__ = target
            for name in ("compiled", "bf16_margin"):
                if target is FusedLIFNode:
                    setattr(module, name, bool(options.get(name, False)))
                else:
                    module.__dict__.pop(name, None)
            count += 1
    return count


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX), which make
    oneDNN's bfloat16 matmuls and convolutions 2-3x faster than float32 ones."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def configure(
    model: nn.Module,
    mode: Mode = "fast",
    *,
    device: str | torch.device | None = None,
    compile_kernels: bool | Literal["auto"] = "auto",
    amp: bool = True,
    exact: bool = False,
    retain_memory: bool | Literal["auto"] = "auto",
) -> StepPlan:
    """Put ``model`` on ``device`` in fast or reference mode and say how to step it.

    Args:
        model: A gradprobe backbone (any module with spikingjelly LIFs works).
        mode: ``"fast"`` or ``"reference"`` (see the module docstring).
        device: Target device; ``None`` picks CUDA when present, else CPU.
        compile_kernels: Fast mode on CPU: build the fused LIF with TorchInductor (about 20 s
            once per process, cached on disk after; it pays within a few training steps).
            ``"auto"`` does so when a C++ compiler is found.
        amp: On CUDA, autocast (bfloat16 in fast mode, float16 in reference mode). Ignored on
            CPU, where both modes run float32.
        exact: Fast mode on CPU: every gradient in float32, every BatchNorm on reference
            mode's kernels (forward and backward) and the residual stream in reference
            mode's layout (so dense token matmuls). ``False`` (the default) gives the backward's
            convolutions and token matmuls bfloat16 operands on a CPU with native bfloat16 dot
            products: the forward (spikes, loss) stays reference mode's bit for bit and
            gradients agree within 3 % per parameter tensor (``tests/test_fast.py``).
        retain_memory: Fast mode on CPU: make glibc keep freed memory for reuse
            (`gradprobe.allocator.retain_freed_memory`; process-wide, cannot be undone).
            ``"auto"`` and ``True`` do so in fast mode on CPU; ``False`` leaves the allocator
            alone. Reference mode never changes it.

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
    if retain_memory not in (True, False, "auto"):
        raise ValueError(f"unknown retain_memory {retain_memory!r}; choices: auto, True, False")
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    on_cuda = device.type == "cuda"
    bf16_grads = False
    if mode == "reference":
        count = set_lif_kernel(model, "loop")
        set_pointwise(model, False)
        set_convs(model, False)
        cl_pool.set_max_pools(model, False)
        pools = sparse = False
        set_token_stream(model, False)
        layout = install_reference_forwards(model)
        amp_dtype = torch.float16 if (amp and on_cuda) else None
        kernel = "loop"
        exact = True
    else:
        compiled = (
            compiler_available() if compile_kernels == "auto" else bool(compile_kernels)
        ) and not on_cuda
        bf16_grads = not (on_cuda or exact) and cpu_has_native_bf16()
        count = set_lif_kernel(model, "fused", compiled=compiled, bf16_margin=bf16_grads)
        remove_reference_forwards(model)
        linears = any(isinstance(m, PointwiseBN) and m.kind == "linear" for m in model.modules())
        # exact keeps the stream in NCHW order, whose strided tokens keep F.linear anyway
        sparse = linears and compiled and not exact and sparse_linear.available()
        set_pointwise(
            model,
            not on_cuda,
            exact=exact,
            bf16_grads=bf16_grads,
            compiled=compiled,
            sparse=sparse,
        )
        set_token_stream(model, not (on_cuda or exact))
        set_convs(model, bf16_grads)
        switched = cl_pool.set_max_pools(model, not on_cuda)  # on CUDA: back to plain pools
        pools = not on_cuda and switched > 0 and cl_pool.available()
        layout = False
        amp_dtype = torch.bfloat16 if (amp and on_cuda) else None
        kernel = (
            "spikingjelly-cuda" if on_cuda else ("fused-inductor" if compiled else "fused-eager")
        )
        if retain_memory and device.type == "cpu":
            allocator.retain_freed_memory()
    return StepPlan(
        mode=mode,
        device=device,
        amp_dtype=amp_dtype,
        lif_kernel=kernel,
        reference_layout=layout,
        lif_count=count,
        exact=bool(exact),
        grad_precision="bf16" if bf16_grads else "fp32",
        retained_memory=allocator.is_retained(),
        channels_last_pools=pools,
        sparse_token_matmul=sparse,
    )


class CUDAGraphStep:
    """A whole training step (forward, loss, backward, optimizer step) captured once as a CUDA
    graph and replayed for every batch.

    At batch 64 a Spikformer-4-384 step on an H100/H200 is bound by the CPU launching a few
    thousand small kernels, not by the GPU (four runs sharing one GPU each run almost as fast as
    one alone). Replaying a captured graph launches them all with one call. What it computes is
    what the eager step computes: the same kernels in the same order, on the same parameters.

    Capture needs a few warm-up steps; they run on a snapshot, and parameters, buffers and
    optimizer state are copied back afterwards, so capturing does not move the model (also when
    it fails: the error is kept in ``failed``, `fits` turns false, and the caller steps eagerly). Batches
    must keep the captured shapes (use full batches). Hooks do not run in a replayed step: run a
    step eagerly where a probe must measure (`gradprobe.probe.Probe.samples_next`). Parameters
    are updated in place, so eager steps and replays can be mixed freely, and learning rates set
    by a scheduler between steps reach the replays.

    Args:
        model: The module to call (e.g. a wrapper returning per-timestep outputs); neuron state is
            reset with spikingjelly's ``reset_net`` before each forward.
        optimizer: An optimizer that supports ``capturable=True`` (Adam, AdamW, ...); the flag is
            set at capture.
        loss_fn: ``loss_fn(model(x), target) -> scalar``.
        plan: The `StepPlan` (its autocast is applied, without autocast's weight cache).
        grad_clip: Clip the global gradient norm to this (no host sync), or ``None``.
        warmup: Eager steps before capture.
        measure_memory: Record in ``peak_mib`` the most memory the captured step allocates at
            once (what ``torch.cuda.max_memory_allocated`` reports for an eager step; this resets
            the device's peak-memory statistics). Its footprint, the private pool's reserved
            size, is `graph_pool_mib`.

    Example:
        >>> step = CUDAGraphStep(model, optimizer, loss_fn, plan)  # doctest: +SKIP
        >>> loss, out = step(x, y)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn,
        plan: StepPlan,
        grad_clip: float | None = None,
        warmup: int = 3,
        measure_memory: bool = False,
    ) -> None:
        if plan.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA plan, got device {plan.device}")
        if not supports_cuda_graph(optimizer):
            raise ValueError(f"{type(optimizer).__name__} has no capturable mode")
        self.model, self.optimizer, self.loss_fn, self.plan = model, optimizer, loss_fn, plan
        self.grad_clip, self.warmup, self.measure_memory = grad_clip, warmup, measure_memory
        self.peak_mib: float | None = None  # set at capture when measure_memory
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, ...] = ()
        self._lrs: list[float] = []
        self._lr_tensors: list[torch.Tensor] = []
        self.failed: str | None = None  # why a capture failed; no replays after that

    def _step(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        functional.reset_net(self.model)
        with self.plan.autocast(cache=False):
            out = self.model(x)
            loss = self.loss_fn(out, target)
        loss.backward()
        if self.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, float(self.grad_clip), foreach=True)
        self.optimizer.step()
        return loss.detach(), out.detach()

    def _snapshot(self) -> tuple[dict, dict]:
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        saved = {name: t.detach().clone() for name, t in tensors.items()}
        state = {
            p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
            for p, s in self.optimizer.state.items()
        }
        return saved, state

    def _restore(self, saved: dict, state: dict) -> None:
        tensors = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        with torch.no_grad():
            for name, t in tensors.items():
                t.copy_(saved[name])
            for p, s in self.optimizer.state.items():
                for k, v in s.items():
                    if torch.is_tensor(v):
                        v.copy_(state[p][k]) if p in state else v.zero_()

    def capture(self, x: torch.Tensor, target: torch.Tensor) -> None:
        """Warm up on (copies of) this batch, capture the step, and put the model back."""
        groups = self.optimizer.param_groups
        for group in groups:  # set here: loading a state dict may have reset it
            group["capturable"] = True
        for param, state in self.optimizer.state.items():  # eager steps count on the host
            if torch.is_tensor(state.get("step")) and state["step"].device != param.device:
                state["step"] = state["step"].to(param.device, torch.float32)
        # The graph reads each group's learning rate from a device tensor, which a replay
        # refreshes when a scheduler has set a new float; the groups keep their floats.
        self._lrs = [float(group["lr"]) for group in groups]
        self._lr_tensors = [torch.tensor(lr, device=self.plan.device) for lr in self._lrs]
        static_x, static_target = x.clone(), target.clone()
        saved, state = self._snapshot()
        try:
            for group, lr in zip(groups, self._lr_tensors, strict=True):
                group["lr"] = lr
            side = torch.cuda.Stream(self.plan.device)
            side.wait_stream(torch.cuda.current_stream(self.plan.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._step(static_x, static_target)
            torch.cuda.current_stream(self.plan.device).wait_stream(side)
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            if self.measure_memory:
                torch.cuda.synchronize(self.plan.device)
                before = torch.cuda.memory_allocated(self.plan.device)
                torch.cuda.reset_peak_memory_stats(self.plan.device)
            with torch.cuda.graph(graph):
                static_loss, static_out = self._step(static_x, static_target)
            if self.measure_memory:
                peak = torch.cuda.max_memory_allocated(self.plan.device)
                self.peak_mib = (peak - before) / 2**20
        except Exception as error:
            self.failed = f"{type(error).__name__}: {error}"
            raise
        finally:
            for group, lr in zip(groups, self._lrs, strict=True):
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            self._restore(saved, state)
        self.graph = graph
        self.static = (static_x, static_target, static_loss, static_out)

    def fits(self, x: torch.Tensor, target: torch.Tensor) -> bool:
        """Whether a batch can be replayed: the captured shapes (any shapes before capture),
        and no failed capture."""
        if self.failed is not None:
            return False
        if self.graph is None:
            return True
        static_x, static_target = self.static[:2]
        return x.shape == static_x.shape and target.shape == static_target.shape

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step on ``(x, target)``; returns the (static) loss and model output."""
        if self.graph is None:
            self.capture(x, target)
        static_x, static_target, loss, out = self.static
        if not self.fits(x, target):
            raise ValueError(
                f"batch shapes {tuple(x.shape)}/{tuple(target.shape)} differ from the captured "
                f"{tuple(static_x.shape)}/{tuple(static_target.shape)}"
            )
        for i, group in enumerate(self.optimizer.param_groups):
            if float(group["lr"]) != self._lrs[i]:  # a scheduler stepped
                self._lrs[i] = float(group["lr"])
                self._lr_tensors[i].fill_(self._lrs[i])
        static_x.copy_(x, non_blocking=True)
        static_target.copy_(target, non_blocking=True)
        self.graph.replay()
        return loss, out


def graph_pool_mib(graph: torch.cuda.CUDAGraph) -> float | None:
    """Device memory held by a captured graph's private pool, in MiB (what its replays use),
    or ``None`` when the allocator snapshot does not name pools."""
    pool = tuple(graph.pool())
    sizes = [
        segment["total_size"]
        for segment in torch.cuda.memory_snapshot()
        if tuple(segment.get("segment_pool_id") or ()) == pool
    ]
    return sum(sizes) / 2**20 if sizes else None


def supports_cuda_graph(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` has a ``capturable`` mode (Adam, AdamW, and others in torch.optim)."""
    return "capturable" in optimizer.defaults
