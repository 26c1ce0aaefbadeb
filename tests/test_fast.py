"""`gradprobe.fast.configure`: the fast path computes what reference mode computes.

``exact=True``: same spikes, same loss, gradients to float32 rounding. The default fast path:
the same spikes and loss (its bfloat16 gradient operands change only the backward), gradients to
bfloat16 rounding. Also the plan's precision, the CPU layers (`gradprobe.fast.layers`,
`gradprobe.fast.autograd`), the token stream (`gradprobe.fast.token_stream`) and
`gradprobe.fast.CUDAGraphStep`.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron

from gradprobe import fast
from gradprobe.downsample import list_downsamples
from gradprobe.fast import FusedLIFNode, LoopLIFNode, cl_pool
from gradprobe.fast import plan as plan_module
from gradprobe.fast.autograd import BF16GradConv, TokenLinear
from gradprobe.fast.swap import plain_class, swap_class
from gradprobe.fast.token_stream import TokenStream, TokenStreamSelfAttention
from gradprobe.models import create_model, list_models
from gradprobe.models.layers import SpikingSelfAttention, SpikingTransformer
from gradprobe.neuron import is_spiking_neuron
from gradprobe.probe import attach_probe

VARIANTS = list_downsamples()
CIFAR_MODELS = list_models("*_cifar")


def tiny(name: str, variant: str, T: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    if name.startswith(("spikformer", "spikingformer")):
        sizes = {"embed_dim": 32, "num_heads": 2, "depth": 1}
    elif name.startswith("sps_tokenizer"):
        sizes = {"embed_dim": 16}
    else:
        sizes = {}
    return create_model(name, downsample=variant, T=T, num_classes=10, **sizes).train()


def same_spikes(ref: torch.Tensor, ours: torch.Tensor) -> bool:
    """Reference-mode blocks hold tokens as [T, B, N, C] (Spikformer) or [T, B, C, N]
    (Spikingformer attention); ours always as [T, B, C, H, W]."""
    if ref.dim() == 4 and ours.dim() == 5:
        ours = ours.flatten(3)
        if ref.shape != ours.shape:
            ours = ours.transpose(-1, -2)
    return torch.equal(ref, ours)


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    spikes = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: spikes.append(o.detach().clone()))
        for m in model.modules()
        if is_spiking_neuron(m)
    ]
    functional.reset_net(model)
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    for hook in hooks:
        hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), spikes, grads


def assert_grads_close(ref: dict, got: dict) -> None:
    assert ref.keys() == got.keys()
    # Biases feeding a BatchNorm have a zero true gradient; only rounding noise is left there,
    # so the tolerance is scaled by the largest gradient of the model.
    scale = max(g.abs().max().item() for g in ref.values())
    for name, g in ref.items():
        torch.testing.assert_close(got[name], g, rtol=1e-3, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_fast_equals_reference_mode(name: str, variant: str) -> None:
    model = tiny(name, variant)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(4) % 10
    ref_plan = fast.configure(model, "reference", device="cpu")
    loss_ref, spikes_ref, grads_ref = step(model, x, y)
    fast_plan = fast.configure(model, "fast", device="cpu", compile_kernels=False, exact=True)
    loss_fast, spikes_fast, grads_fast = step(model, x, y)
    assert fast_plan.exact and fast_plan.grad_precision == "fp32"
    assert ref_plan.lif_kernel == "loop" and fast_plan.lif_kernel == "fused-eager"
    assert len(spikes_ref) == len(spikes_fast) == ref_plan.lif_count > 0
    assert all(map(same_spikes, spikes_ref, spikes_fast))
    assert loss_fast == pytest.approx(loss_ref, rel=1e-3)
    assert_grads_close(grads_ref, grads_fast)


# bfloat16 keeps 8 significant bits (unit roundoff 2**-9); each layer of the backward adds that
# rounding to its operands, so a gradient several layers deep carries a few times 2**-9.
BF16_GRAD_RTOL = 2**-5


def assert_grads_close_bf16(ref: dict, got: dict) -> None:
    assert ref.keys() == got.keys()
    flat_ref = torch.cat([g.flatten() for g in ref.values()]).double()
    flat_got = torch.cat([got[n].flatten() for n in ref]).double()
    assert F.cosine_similarity(flat_ref, flat_got, dim=0).item() > 0.9999
    scale = flat_ref.abs().max().item()
    for name, g in ref.items():
        if g.abs().max().item() < 1e-3 * scale:  # e.g. biases feeding a BatchNorm: zero true grad
            continue
        error = ((got[name] - g).norm() / g.norm()).item()
        assert error < BF16_GRAD_RTOL, f"{name}: relative error {error:.4f}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_default_fast_path_agrees_with_reference_mode(
    name: str, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default (``exact=False``) fast path, with bfloat16 gradient operands forced on so
    that it runs on any CPU (oneDNN emulates bfloat16 where the CPU lacks it)."""
    monkeypatch.setattr("gradprobe.fast.plan.cpu_has_native_bf16", lambda: True)
    model = tiny(name, variant)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(4) % 10
    fast.configure(model, "reference", device="cpu")
    loss_ref, spikes_ref, grads_ref = step(model, x, y)
    fast_plan = fast.configure(model, "fast", device="cpu", compile_kernels=False)
    loss_fast, spikes_fast, grads_fast = step(model, x, y)
    assert not fast_plan.exact and fast_plan.grad_precision == "bf16"
    assert any(isinstance(m, (fast.FastConv1d, fast.FastConv2d)) for m in model.modules())
    # bfloat16 operands change only the backward: the forward is reference mode's bit for bit
    assert loss_fast == loss_ref
    assert all(map(same_spikes, spikes_ref, spikes_fast))
    assert_grads_close_bf16(grads_ref, grads_fast)


def assert_eval_matches_reference(model: torch.nn.Module, x: torch.Tensor) -> None:
    """The model's eval logits in its current (fast) mode equal reference mode's, bit for bit;
    leaves the model in reference mode."""
    model.eval()
    with torch.no_grad():
        functional.reset_net(model)
        logits_fast = model(x)
        fast.configure(model, "reference", device="cpu")
        functional.reset_net(model)
        assert torch.equal(model(x), logits_fast)


@pytest.mark.parametrize("variant", ["lif_maxpool", "maxpool_lif"])
def test_full_size_fast_path_agrees_with_reference_mode(variant: str) -> None:
    """Spikformer-4-384 at T=4 on 8 images, the default fast path with its compiled kernels
    (token BatchNorm over rows with `rows_bn`): the forward is reference mode's bit for bit.
    (Forward only: gradient operands do not change it, so bf16 is not forced on CPUs without
    native bf16, where oneDNN would emulate it slowly at this size.)"""
    torch.manual_seed(0)
    model = create_model("spikformer_4_384_cifar", downsample=variant, T=4).train()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.arange(8) % 10
    fast.configure(model, "reference", device="cpu")
    loss_ref, spikes_ref, _ = step(model, x, y)
    fast_plan = fast.configure(model, "fast", device="cpu")
    loss_fast, spikes_fast, _ = step(model, x, y)
    if fast_plan.lif_kernel == "fused-inductor":  # the rows BatchNorm ran (it needs the compiler)
        assert all(m.compiled for m in model.modules() if isinstance(m, fast.FastPointwiseBN))
    assert loss_fast == loss_ref
    assert all(map(same_spikes, spikes_ref, spikes_fast))
    assert_eval_matches_reference(model, x)  # running statistics, no autograd: the same logits


def test_full_size_exact_fast_path_agrees_with_reference_mode() -> None:
    """``exact=True`` at full size with the compiled kernels (the token stream is off, so token
    Linears read strided tokens and keep ``F.linear``; the backward stays oneDNN's float32
    one): the loss and spikes are reference mode's, the gradients agree to float32 rounding,
    and the eval logits are reference mode's."""
    torch.manual_seed(0)
    model = create_model("spikformer_4_384_cifar", downsample="maxpool_lif", T=4).train()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    y = torch.arange(4) % 10
    fast.configure(model, "reference", device="cpu")
    loss_ref, spikes_ref, grads_ref = step(model, x, y)
    fast.configure(model, "fast", device="cpu", exact=True)
    loss_fast, spikes_fast, grads_fast = step(model, x, y)
    assert loss_fast == loss_ref
    assert all(map(same_spikes, spikes_ref, spikes_fast))
    assert_grads_close(grads_ref, grads_fast)
    assert_eval_matches_reference(model, x)


def test_bf16_gradient_operands(monkeypatch: pytest.MonkeyPatch) -> None:
    """`BF16GradConv` and `TokenLinear` with bfloat16 operands: the float32 forward bit for bit; the
    gradients of float32 maths on the bfloat16-rounded operands, to bfloat16 rounding."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(6, 8, 10, 10, generator=gen) < 0.3).float()  # spikes: exact in bfloat16
    w = torch.randn(16, 8, 3, 3, generator=gen)
    g = torch.randn(6, 16, 5, 5, generator=gen)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = BF16GradConv.apply(xr, wr, None, [2, 2], [1, 1], [1, 1], 1)
    assert torch.equal(y, F.conv2d(x, w, stride=2, padding=1))
    y.backward(g)
    rounded = [t.bfloat16().float().requires_grad_() for t in (x, w)]
    F.conv2d(*rounded, stride=2, padding=1).backward(g.bfloat16().float())
    for ours, want in zip((xr.grad, wr.grad), (rounded[0].grad, rounded[1].grad), strict=True):
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, want, rtol=2**-7, atol=2**-7 * want.abs().max().item())
    exact_w = w.clone().requires_grad_()
    F.conv2d(x, exact_w, stride=2, padding=1).backward(g)
    assert not torch.equal(wr.grad, exact_w.grad)  # the operands were rounded

    tokens = (torch.rand(4, 6, 12, generator=gen) < 0.3).float()
    weight, bias = torch.randn(20, 12, generator=gen), torch.randn(20, generator=gen)
    grad = torch.randn(4, 6, 20, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (tokens, weight, bias)]
    out = TokenLinear.apply(*leaves, True)
    assert torch.equal(out, F.linear(tokens, weight, bias))
    out.backward(grad)
    want = [t.bfloat16().float().requires_grad_() for t in (tokens, weight)]
    F.linear(*want).backward(grad.bfloat16().float())
    for ours, ref in zip(leaves[:2], want, strict=True):
        scale = ref.grad.abs().max().item()
        torch.testing.assert_close(ours.grad, ref.grad, rtol=2**-7, atol=2**-7 * scale)
    torch.testing.assert_close(leaves[2].grad, grad.sum((0, 1)))  # the bias: float32 sums


def test_fast_path_trains_under_cpu_autocast() -> None:
    """``trainer.amp=bf16`` on CPU: bfloat16 matmuls and BN, float32 LIF state, finite grads."""
    model = tiny("spikformer_4_256_cifar", "maxpool_lif")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    fast.configure(model, "reference", device="cpu")
    loss_ref, _, _ = step(model, x, torch.arange(4))
    fast.configure(model, "fast", device="cpu", compile_kernels=False)
    functional.reset_net(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), torch.arange(4))
    loss.backward()
    assert logits.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(loss_ref, rel=0.05)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_configure_round_trip_restores_the_model() -> None:
    model = tiny("spikformer_4_256_cifar", "maxpool_lif")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n_params = sum(p.numel() for p in model.parameters())
    own = [type(m) for m in model.modules()]
    fast.configure(model, "reference", device="cpu")
    assert all(type(m) is LoopLIFNode for m in model.modules() if isinstance(m, neuron.LIFNode))
    fast.configure(model, "fast", device="cpu")
    assert all(type(m) is FusedLIFNode for m in model.modules() if isinstance(m, neuron.LIFNode))
    assert not any(type(m).__name__.startswith("Reference") for m in model.modules())
    assert [plain_class(type(m)) for m in model.modules()] == own
    fast.configure(model, "reference", device="cpu")  # and back: nothing of fast mode is left
    assert [plain_class(type(m)) for m in model.modules()] == own
    fast_only = (FusedLIFNode, fast.FastPointwiseBN, fast.FastMaxPool2d, TokenStream)
    assert not any(isinstance(m, (*fast_only, TokenStreamSelfAttention)) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="unknown mode"):
        fast.configure(model, "turbo")


def test_precision_is_the_one_owner_of_the_autocast_dtype() -> None:
    """``precision="auto"`` keeps each mode's default (fast: bf16 on CUDA, reference: fp16 on
    CUDA, the official ``--amp``; fp32 on CPU); an explicit value holds on any device."""
    model = tiny("sps_tokenizer_cifar", "maxpool_lif")
    for mode in fast.MODES:
        assert fast.configure(model, mode, device="cpu").amp_dtype is None
        for precision, dtype in fast.AMP_DTYPES.items():
            assert fast.configure(model, mode, device="cpu", precision=precision).amp_dtype == dtype
    cuda = torch.device("cuda")  # the defaults there, without a GPU
    assert plan_module.autocast_dtype("fast", cuda) == torch.bfloat16
    assert plan_module.autocast_dtype("reference", cuda) == torch.float16
    assert plan_module.autocast_dtype("reference", cuda, "fp32") is None
    plan = fast.configure(model, "fast", device="cpu", precision="bf16")
    assert plan.autocast().fast_dtype == torch.bfloat16 and not plan.needs_grad_scaler
    # the harness's own override still works
    assert dataclasses.replace(plan, amp_dtype=torch.float16).needs_grad_scaler
    with pytest.raises(
        ValueError, match="unknown precision 'fp8'; choices: auto, fp32, bf16, fp16"
    ):
        fast.configure(model, "fast", device="cpu", precision="fp8")


@pytest.mark.parametrize("variant", VARIANTS)
def test_probe_records_on_fast_model(variant: str) -> None:
    model = tiny("spikformer_4_256_cifar", variant)
    fast.configure(model, "fast", device="cpu")
    x = torch.rand(2, 3, 32, 32)
    with attach_probe(model) as probe:
        functional.reset_net(model)
        model(x).sum().backward()
    frame = probe.to_frame()
    assert len(frame) == 2 * 2  # two CIFAR sites x T=2
    assert set(frame["variant"]) == {variant}
    assert (frame["spike_rate"] >= 0).all()


@pytest.mark.gpu
def test_cuda_fast_and_reference_modes() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = tiny("spikformer_4_256_cifar", "maxpool_lif")
    x = torch.rand(4, 3, 32, 32, device="cuda")
    y = torch.arange(4, device="cuda") % 10
    plan = fast.configure(model, "reference", precision="fp32")
    assert plan.device.type == "cuda" and plan.amp_dtype is None
    loss_ref, spikes_ref, _ = step(model, x, y)
    plan = fast.configure(model, "fast", precision="fp32")
    assert plan.lif_kernel == "spikingjelly-cuda"
    # the CPU-only layers stay off on CUDA (and the plan says so)
    assert not plan.channels_last_pools
    assert not any(isinstance(m, cl_pool.FastMaxPool2d) for m in model.modules())
    loss_fast, spikes_fast, _ = step(model, x, y)
    # cuDNN/cuBLAS may pick different algorithms for the two layouts (and TF32 for convs),
    # so all but two LIF outputs must match exactly here; on CPU all do.
    agree = sum(map(same_spikes, spikes_ref, spikes_fast))
    assert agree >= len(spikes_ref) - 2
    assert loss_fast == pytest.approx(loss_ref, rel=1e-2)
    plan = fast.configure(model, "fast")  # bf16 autocast: spikes may differ, loss must be sane
    assert plan.amp_dtype == torch.bfloat16
    assert fast.configure(model, "reference").amp_dtype == torch.float16  # the official --amp
    plan = fast.configure(model, "fast")
    functional.reset_net(model)
    with plan.autocast():
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
def test_probe_records_on_cuda_under_bf16(variant: str) -> None:
    """The probe on the CUDA fast path (spikingjelly's fused LIF, bf16 autocast): CML's windows
    still send all their gradient to the arg-max of the pre-spike map (eq. 11)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = tiny("spikformer_4_256_cifar", variant)
    plan = fast.configure(model, "fast")
    x = torch.rand(4, 3, 32, 32, device="cuda")
    with attach_probe(model) as probe:
        functional.reset_net(model)
        with plan.autocast():
            out = model(x)
        out.float().sum().backward()
    frame = probe.to_frame()
    assert len(frame) == 2 * 2 and set(frame["variant"]) == {variant}
    if variant == "maxpool_lif":
        assert (frame["precision"] == 1.0).all()
    if variant == "strided_conv":
        assert frame["precision"].isna().all()


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_graph_step_trains_as_eager_steps(amp: bool) -> None:
    """`CUDAGraphStep`: capturing leaves the model as it was, and replays follow the eager
    steps' losses and parameters, also across a learning-rate change."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    eager = tiny("spikformer_4_256_cifar", "maxpool_lif")
    graphed = tiny("spikformer_4_256_cifar", "maxpool_lif")
    precision = "auto" if amp else "fp32"
    plans = [fast.configure(m, "fast", precision=precision) for m in (eager, graphed)]
    # capturable in both, so that both run the same optimizer kernels
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3, capturable=True) for m in (eager, graphed)]
    batches = [(torch.rand(8, 3, 32, 32, device="cuda"), torch.arange(8, device="cuda") % 10)]
    batches += [(torch.rand(8, 3, 32, 32, device="cuda"), batches[0][1]) for _ in range(3)]
    step = fast.CUDAGraphStep(graphed, opts[1], F.cross_entropy, plans[1], measure_memory=True)
    before = {k: v.clone() for k, v in graphed.state_dict().items()}
    step.capture(*batches[0])
    assert all(torch.equal(before[k], v) for k, v in graphed.state_dict().items())
    # the captured step allocates at least its gradients, within the pool its replays keep
    grads_mib = sum(p.numel() * p.element_size() for p in graphed.parameters()) / 2**20
    assert grads_mib <= step.peak_mib <= fast.graph_pool_mib(step.graph)
    for i, (x, y) in enumerate(batches):
        if i == 2:  # a scheduler's new learning rate reaches the replays
            for opt in opts:
                opt.param_groups[0]["lr"] = 3e-4
        functional.reset_net(eager)
        opts[0].zero_grad(set_to_none=True)
        with plans[0].autocast():
            loss = F.cross_entropy(eager(x), y)
        loss.backward()
        opts[0].step()
        replayed, _ = step(x, y)
        assert replayed.item() == pytest.approx(loss.item(), rel=1e-5)
    for (name, p), q in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        if name.endswith("proj.bias"):
            # feeds a BatchNorm: zero true gradient, so Adam steps on rounding noise (at most lr
            # per step either way); the outputs do not depend on it
            assert (q - p).abs().max().item() <= 2 * 4 * 1e-3
        else:
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name)
    assert step.fits(*batches[0]) and not step.fits(batches[0][0][:4], batches[0][1][:4])


def test_fast_token_linear_matches_reference_linear() -> None:
    """`FastPointwiseBN`: the same forward bits as ``Linear`` + ``BatchNorm1d`` on the
    transposed tokens (reference mode), a oneDNN backward within float rounding."""
    from gradprobe.fast import FastPointwiseBN
    from gradprobe.models.layers import PointwiseBN

    torch.manual_seed(0)
    ref = PointwiseBN(48, 96, bias=True, kind="linear").train()
    ours = PointwiseBN(48, 96, bias=True, kind="linear").train()
    ours.load_state_dict(ref.state_dict())
    ours.__class__ = FastPointwiseBN
    x = (torch.rand(3, 4, 48, 4, 4) < 0.3).float() * 2  # integer-valued, as on the token stream
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    tokens = x_ref.flatten(3).transpose(-1, -2).reshape(12, 16, 48)
    y_ref = torch.nn.BatchNorm1d.forward(ref.bn, ref.proj(tokens).transpose(-1, -2))
    y_ref = y_ref.reshape(3, 4, 96, 4, 4)
    y_ours = ours(x_ours)
    assert torch.equal(y_ours, y_ref)
    grad = torch.randn(y_ref.shape)
    (y_ref * grad).sum().backward()
    (y_ours * grad).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    # the bias feeds BatchNorm: zero true gradient, rounding noise only (see assert_grads_close)
    assert_grads_close(
        {n: p.grad for n, p in ref.named_parameters()},
        {n: p.grad for n, p in ours.named_parameters()},
    )


def test_fast_mode_switches_token_linears_on_cpu_only() -> None:
    from gradprobe.fast import FastPointwiseBN
    from gradprobe.models.layers import PointwiseBN

    model = tiny("spikformer_4_256_cifar", "lif_maxpool")
    fast.configure(model, "fast", device="cpu")
    kinds = {type(m) for m in model.modules() if isinstance(m, PointwiseBN)}
    assert kinds == {FastPointwiseBN}
    fast.configure(model, "reference", device="cpu")
    kinds = {type(m) for m in model.modules() if isinstance(m, PointwiseBN)}
    assert kinds == {PointwiseBN}


def test_cuda_graph_step_refuses_what_it_cannot_capture() -> None:
    model = tiny("sps_tokenizer_cifar", "maxpool_lif")
    plan = fast.configure(model, "fast", device="cpu")
    adam = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA plan, got device cpu"):
        fast.CUDAGraphStep(model, adam, F.cross_entropy, plan)
    assert fast.supports_cuda_graph(adam)
    assert not fast.supports_cuda_graph(torch.optim.SGD(model.parameters(), lr=0.1))


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_token_stream_only_where_every_pointwise_layer_is_a_token_linear(name: str) -> None:
    """Spikformer CIFAR's residual stream is held in token order in default fast mode on CPU
    (its pointwise layers are Linears), never in reference or exact mode, never for Conv1d
    pointwise layers (Spikingformer)."""
    model = tiny(name, "lif_maxpool")
    transformers = [m for m in model.modules() if isinstance(m, SpikingTransformer)]
    attention = [m for m in model.modules() if isinstance(m, SpikingSelfAttention)]

    def streams() -> list[bool]:
        return [type(m.blocks) is TokenStream for m in transformers]

    fast.configure(model, "fast", device="cpu", compile_kernels=False)
    expected = name.startswith("spikformer")
    assert streams() == [expected] * len(transformers)
    assert [type(m) is TokenStreamSelfAttention for m in attention] == [expected] * len(attention)
    fast.configure(model, "fast", device="cpu", compile_kernels=False, exact=True)
    assert not any(streams())
    assert not any(isinstance(m, TokenStreamSelfAttention) for m in attention)
    fast.configure(model, "reference", device="cpu")
    assert not any(streams())


def test_token_stream_gradients_stay_in_token_order() -> None:
    """The head sends back a broadcast gradient; the stream hands it on in token memory order,
    so that the residual adds and every LIF on the stream see the layout of their outputs (the
    gradient of the last block's output, inside the `TokenStream`)."""
    model = tiny("spikformer_4_384_cifar", "lif_maxpool")
    fast.configure(model, "fast", device="cpu", compile_kernels=False)
    grads = []

    def keep_grad(module, args, output):
        output.register_hook(grads.append)

    model.blocks[-1].register_forward_hook(keep_grad)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    functional.reset_net(model)
    model(x).sum().backward()
    (grad,) = grads
    assert grad.permute(0, 1, 3, 4, 2).is_contiguous()  # [T, B, H, W, C] memory
    assert not grad.is_contiguous()


def test_attention_keeps_a_token_stream_in_token_order() -> None:
    """In a token stream the attention merges its heads in token order (no copy back for the
    projection's token Linear); the values are the model's own attention's, which merges them
    in NCHW order whatever its input's memory order (the model holds no layout branch)."""
    torch.manual_seed(0)
    attn = SpikingSelfAttention(32, 4, qkv_kind="linear", proj_kind="linear", qkv_bias=True)
    functional.set_step_mode(attn, "m")
    x = (torch.rand(2, 3, 4, 4, 32) < 0.3).float().permute(0, 1, 4, 2, 3)  # token order
    seen = []
    attn.attn_lif.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    out_maps = attn(x.contiguous())
    functional.reset_net(attn)
    out_own = attn(x)
    functional.reset_net(attn)
    swap_class(attn, TokenStreamSelfAttention)
    out_tokens = attn(x)
    assert seen[0].is_contiguous() and seen[1].is_contiguous()
    assert seen[2].permute(0, 1, 3, 4, 2).is_contiguous()
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[2])
    assert torch.equal(out_tokens, out_maps) and torch.equal(out_own, out_maps)
