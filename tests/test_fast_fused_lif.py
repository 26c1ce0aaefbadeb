"""`gradprobe.fast.fused_lif`: the fused LIF computes the per-timestep loop's spikes bit for bit.

Spikes, membrane and (float32) gradients are held against reference mode's `LoopLIFNode`, the
loop the official code runs, over every neuron setting the kernel covers.
"""

from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional

from gradprobe.fast import fused_lif, set_lif_kernel
from gradprobe.fast.fused_lif import FusedLIFNode
from gradprobe.fast.kernels import compiler_available
from gradprobe.neuron import NeuronConfig, make_neuron

NEURONS = [
    {},
    {"v_threshold": 0.5},
    {"tau": 1.5},
    {"tau": 1.75, "v_reset": None},
    {"decay_input": False},
    {"surrogate": "atan", "alpha": 2.0},
]


def lif_with(kernel: str, cfg: NeuronConfig | None = None, **options) -> torch.nn.Module:
    """A model LIF of ``cfg`` running kernel ``"fused"`` or ``"loop"`` (`set_lif_kernel`)."""
    lif = make_neuron(cfg or NeuronConfig())
    assert set_lif_kernel(lif, kernel, **options) == 1
    return lif


@pytest.mark.parametrize("bf16_margin", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("kwargs", NEURONS, ids=lambda k: ",".join(map(str, k.items())) or "ref")
def test_fused_lif_matches_loop(kwargs: dict, compiled: bool, bf16_margin: bool) -> None:
    if compiled and not compiler_available():
        pytest.skip("no C++ compiler for TorchInductor")
    cfg = NeuronConfig(**kwargs)
    loop = lif_with("loop", cfg)
    fused = lif_with("fused", cfg, compiled=compiled, bf16_margin=bf16_margin)
    gen = torch.Generator().manual_seed(0)
    # many values near the threshold, so that any change of rounding would flip spikes
    x = torch.randn(4, 16, 64, 33, generator=gen) * 2 + 0.5
    x_loop, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_grad = torch.randn(x.shape, generator=gen)
    s_loop, s_fused = loop(x_loop), fused(x_fused)
    (s_loop * out_grad).sum().backward()
    (s_fused * out_grad).sum().backward()
    assert torch.equal(s_loop, s_fused)
    assert torch.equal(loop.v, fused.v)
    if not bf16_margin:
        torch.testing.assert_close(x_fused.grad, x_loop.grad, rtol=1e-5, atol=1e-6)
        return
    # z = H - V_th rounded to bfloat16 (relative 2**-9) moves each surrogate value by at most
    # alpha * |z| * 2**-9 relative, and the surrogate is negligible beyond alpha * |z| = 4
    error = (x_fused.grad - x_loop.grad).norm() / x_loop.grad.norm()
    assert 0 < error < 4 * 2**-9


def test_fused_lif_keeps_channels_last_layout() -> None:
    lif = FusedLIFNode(tau=2.0, detach_reset=True, step_mode="m")
    x = torch.randn(3, 2, 5, 4, 4).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    out = lif(x * 3)
    assert out.stride() == x.stride()
    functional.reset_net(lif)
    assert torch.equal(out, lif(x.contiguous() * 3))


def test_fused_lif_carries_state_across_calls() -> None:
    loop, fused = lif_with("loop"), lif_with("fused")
    x = torch.rand(2, 3, 7) * 2
    for _ in range(3):  # no reset: v carries over between calls
        assert torch.equal(loop(x), fused(x))


def test_fused_lif_failed_build_warns_and_runs_eager(
    monkeypatch: pytest.MonkeyPatch, broken_kernels
) -> None:
    """A TorchInductor failure warns once, this call's spikes and gradients are still the
    loop's, and later calls (backward included) run the eager kernels."""
    kernels = broken_kernels(fused_lif)
    monkeypatch.setattr("gradprobe.fast.kernels.compiler_available", lambda: True)
    fused, loop = lif_with("fused", compiled=True), lif_with("loop")
    x = (torch.rand(4, 3, 5) * 2).requires_grad_()
    with pytest.warns(UserWarning, match="fused LIF: TorchInductor build failed"):
        out = fused(x)
    assert kernels.broken and not kernels.available()
    out.sum().backward()
    ref_x = x.detach().requires_grad_()
    ref = loop(ref_x)
    ref.sum().backward()
    assert torch.equal(out, ref)
    torch.testing.assert_close(x.grad, ref_x.grad)


def test_fused_lif_backward_builds_no_zero_state_gradient(zeros_made) -> None:
    """The last V of a call is usually unused: autograd must not materialise a zero gradient
    for it (a [N] float32 tensor per call), and the gradients must still equal the loop's,
    also when the state does carry a gradient into a later call."""
    x = (torch.rand(4, 5, 6) * 2).requires_grad_()
    fused = lif_with("fused")
    out = fused(x)
    with zeros_made() as seen:
        out.sum().backward()
    # (the eager kernel's own zero carry is a zeros_like; autograd's would be an aten.zeros)
    assert not [made for made in seen.made if made[0] == "zeros"]
    loop = lif_with("loop")
    for neuron_ in (fused, loop):  # two calls: the second one's loss reaches the first's V
        neuron_.reset()
    grads = []
    for neuron_ in (fused, loop):
        xs = x.detach().requires_grad_()
        (neuron_(xs).sum() + neuron_(xs * 0.5).sum()).backward()
        grads.append(xs.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_fused_lif_takes_bfloat16_input() -> None:
    """CPU autocast feeds LIFs bfloat16: spikes as the loop's on the same values, state float32."""
    x = torch.rand(4, 3, 50, generator=torch.Generator().manual_seed(4)) * 2
    xb = x.bfloat16().requires_grad_()
    x32 = xb.detach().float().requires_grad_()
    fused, loop = lif_with("fused"), lif_with("loop")
    out_b, out_32 = fused(xb), loop(x32)
    assert out_b.dtype == torch.bfloat16 and fused.v.dtype == torch.float32
    assert torch.equal(out_b.float(), out_32)
    grad = torch.randn(out_32.shape)
    out_b.backward(grad.bfloat16())
    out_32.backward(grad.bfloat16().float())
    assert xb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(xb.grad.float(), x32.grad, rtol=2**-7, atol=1e-6)
