"""`gradprobe.fast.sparse_linear`: token Linears that skip zero inputs, bit for bit ``F.linear``."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from gradprobe.fast import sparse_linear
from gradprobe.fast.autograd import TokenLinear
from gradprobe.fast.kernels import compiler_available

needs_kernel = pytest.mark.skipif(
    not compiler_available() or not sparse_linear.available(), reason="needs a C++ toolchain"
)
AVX512 = torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX")


def tokens(shape, density: float, top: int = 1, seed: int = 0) -> torch.Tensor:
    """Spikes (``top=1``) or the residual stream's small integers, ``density`` nonzero."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.randint(1, top + 1, shape, generator=gen).float()
    return values * (torch.rand(shape, generator=gen) < density)


def blocked_fma(x: torch.Tensor, weight: torch.Tensor, bias, kc: int) -> torch.Tensor:
    """The documented order: the output starts as the bias; per block of ``kc`` inputs, a
    float32 accumulator from zero takes fused multiply-adds in input order (emulated exactly
    enough in float64), then is added to the output."""
    out = torch.zeros(x.shape[0], weight.shape[0]) if bias is None else bias.expand(x.shape[0], -1)
    for k0 in range(0, x.shape[1], kc):
        acc = torch.zeros(x.shape[0], weight.shape[0])
        for k in range(k0, min(x.shape[1], k0 + kc)):
            acc = (acc.double() + x[:, k, None].double() * weight[:, k].double()).float()
        out = out + acc
    return out


@needs_kernel
@pytest.mark.parametrize(
    ("rows", "k", "n", "kc"),
    [(70, 200, 70, 64), (33, 17, 20, 5), (40, 48, 144, 48), (5, 300, 16, 192)],
)
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_sums_in_blocks_with_fused_multiply_adds(rows, k, n, kc, bias) -> None:
    """Tails of every loop (rows, inputs and outputs not multiples of the tiles) included."""
    x = tokens((rows, k), 0.3, top=3)
    x[1] = 0  # a row without spikes: the output is the bias
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(n, k, generator=gen)
    b = torch.randn(n, generator=gen) if bias else None
    got = sparse_linear._kernel(x, weight.t().contiguous(), b, kc)
    assert torch.equal(got, blocked_fma(x, weight, b, kc))


# Spikformer-4-384's token Linears at T=4, B=4 (M = T·B·64 tokens): q/k/v/proj, fc1, fc2.
SPIKFORMER_SHAPES = [(1024, 384, 384), (1024, 384, 1536), (1024, 1536, 384)]


@needs_kernel
@pytest.mark.parametrize(("rows", "k", "n"), SPIKFORMER_SHAPES)
@pytest.mark.parametrize(("density", "top"), [(0.02, 1), (0.2, 1), (0.3, 6)])
def test_linear_is_f_linear_bit_for_bit(rows, k, n, density, top) -> None:
    x = tokens((rows // 64, 64, k), density, top=top, seed=k + n)
    gen = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(n, k, generator=gen) * 0.05, torch.randn(n, generator=gen)
    before = sparse_linear.stats["sparse"]
    for b in (bias, None):
        assert torch.equal(sparse_linear.linear(x, weight, b), F.linear(x, weight, b))
    if AVX512:  # MKL's order is reproduced for these shapes on AVX-512 CPUs (this kernel's home)
        assert sparse_linear.block_size(rows, k, n, True) is not None
        assert sparse_linear.stats["sparse"] == before + 2


@needs_kernel
def test_a_reference_no_block_size_reproduces_keeps_f_linear(monkeypatch) -> None:
    """If the platform's matmul sums in an order the kernel cannot reproduce, `block_size`
    finds no match and every call goes to that matmul."""

    class Float64Linear:  # sums in float64: no float32 block order gives these bits
        def __getattr__(self, name):
            return getattr(F, name)

        @staticmethod
        def linear(x, weight, bias=None):
            out = x.double() @ weight.double().t()
            return (out if bias is None else out + bias.double()).float()

    monkeypatch.setattr(sparse_linear, "F", Float64Linear())
    sparse_linear._block_size.cache_clear()
    try:
        x = tokens((256, 384), 0.1)
        weight, bias = torch.randn(384, 384), torch.randn(384)
        before = sparse_linear.stats["unmatched"]
        assert sparse_linear.block_size(256, 384, 384, True) is None
        assert torch.equal(
            sparse_linear.linear(x, weight, bias), Float64Linear.linear(x, weight, bias)
        )
        assert sparse_linear.stats["unmatched"] == before + 1
    finally:
        sparse_linear._block_size.cache_clear()


@needs_kernel
def test_dense_inputs_and_autograd_take_f_linear() -> None:
    weight, bias = torch.randn(64, 96), torch.randn(64)
    dense = tokens((512, 96), 0.9)
    before = sparse_linear.stats["dense"]
    assert torch.equal(sparse_linear.linear(dense, weight, bias), F.linear(dense, weight, bias))
    assert sparse_linear.stats["dense"] == before + 1
    leaf = weight.clone().requires_grad_()  # recorded by autograd: F.linear's own backward
    sparse_linear.linear(tokens((512, 96), 0.05), leaf, bias).sum().backward()
    assert leaf.grad is not None


def test_a_failed_build_warns_once_and_keeps_f_linear(monkeypatch) -> None:
    from torch.utils import cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("no toolchain in this test")

    monkeypatch.setattr(cpp_extension, "load_inline", broken)
    monkeypatch.setattr(sparse_linear, "compiler_available", lambda: True, raising=False)
    sparse_linear._module.cache_clear()
    try:
        x, weight = tokens((64, 48), 0.1), torch.randn(32, 48)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                assert torch.equal(sparse_linear.linear(x, weight), F.linear(x, weight))
        assert len([w for w in caught if "sparse token Linear" in str(w.message)]) == 1
        assert not sparse_linear.available()
    finally:
        monkeypatch.undo()
        sparse_linear._module.cache_clear()


@needs_kernel
@pytest.mark.parametrize(("rows", "k", "n"), [(1024, 1536, 384), (300, 70, 37)])
def test_weight_grad_sums_the_nonzero_inputs_in_float32(rows, k, n) -> None:
    x = tokens((rows, k), 0.03, top=2)
    g = torch.randn(rows, n, generator=torch.Generator().manual_seed(4))
    before = sparse_linear.stats["grad_sparse"]
    got = sparse_linear.weight_grad(x, g)
    assert sparse_linear.stats["grad_sparse"] == before + 1
    assert got.shape == (n, k) and got.dtype == torch.float32 and got.is_contiguous()
    want = g.double().t() @ x.double()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    # dense inputs are left to the caller's matmul
    assert sparse_linear.weight_grad(tokens((rows, k), 0.5), g) is None


@needs_kernel
@pytest.mark.parametrize("bf16_grads", [False, True])
def test_sparse_token_linear_forward_bits_and_gradients(bf16_grads: bool) -> None:
    """`gradprobe.fast.autograd.TokenLinear` with ``sparse``: the forward is ``F.linear``'s bits; the
    gradients are the float32 (or bfloat16-operand) backward's; with bfloat16 operands the
    weight's comes from the kernel, in float32."""
    x = tokens((16, 64, 384), 0.03)  # spikes from the MLP's hidden LIF: few fire
    gen = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(96, 384, generator=gen) * 0.05, torch.randn(96, generator=gen)
    grad = torch.randn(16, 64, 96, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    before = sparse_linear.stats.copy()
    out = TokenLinear.apply(*leaves, bf16_grads, True)
    assert torch.equal(out, F.linear(x, weight, bias))
    out.backward(grad)
    calls = sparse_linear.stats - before
    assert calls["grad_sparse"] == int(bf16_grads)  # the float32 backward keeps its rounding
    want = [t.double().requires_grad_() for t in (x, weight, bias)]
    F.linear(*want).backward(grad.double())
    # the weight's gradient: float32 sums either way; the input's: bfloat16 operands or not
    torch.testing.assert_close(leaves[1].grad.double(), want[1].grad, rtol=1e-5, atol=1e-5)
    rtol = 2**-7 if bf16_grads else 1e-5
    scale = want[0].grad.abs().max().item()
    torch.testing.assert_close(leaves[0].grad.double(), want[0].grad, rtol=rtol, atol=rtol * scale)
    torch.testing.assert_close(leaves[2].grad.double(), want[2].grad, rtol=1e-5, atol=1e-4)


@needs_kernel
def test_strided_tokens_keep_f_linear() -> None:
    """Tokens read through a transposed view ([T·B, N, C] over [T·B, C, N] memory, as a token
    Linear outside the token stream sees them): ``F.linear`` then multiplies a transposed
    operand, whose summation order the contiguous probe does not measure; such calls keep
    ``F.linear`` (found by the quickstart: 3 % of outputs differed)."""
    gen = torch.Generator().manual_seed(6)
    x = tokens((64, 256, 16), 0.03, seed=7).transpose(1, 2)  # strides (4096, 1, 16)
    weight, bias = torch.randn(64, 256, generator=gen) * 0.05, torch.randn(64, generator=gen)
    assert not x.is_contiguous()
    assert torch.equal(sparse_linear.linear(x, weight, bias), F.linear(x, weight, bias))
