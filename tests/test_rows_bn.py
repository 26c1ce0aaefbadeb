"""`gradprobe.fast.rows_bn`: BatchNorm over token rows, bit for bit ATen's on the transposed view."""

import copy

import pytest
import torch

from gradprobe import fast
from gradprobe.fast import rows_bn
from gradprobe.fast.kernels import compiler_available
from gradprobe.models import create_model

pytestmark = pytest.mark.skipif(not compiler_available(), reason="needs a C++ compiler")


def transposed(bn: torch.nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Reference mode: ``[S, N, C]`` tokens normalised on their ``[S, C, N]`` view, as rows."""
    return bn(x.transpose(1, 2)).transpose(1, 2).reshape(-1, x.shape[-1])


def float64_grads(bn: torch.nn.BatchNorm1d, x: torch.Tensor, grad: torch.Tensor) -> tuple:
    """Input, weight and bias gradients of ``bn`` in training mode, computed in float64."""
    bn64 = copy.deepcopy(bn).double().train()
    x64 = x.double().requires_grad_()
    transposed(bn64, x64).backward(grad.double())
    return x64.grad.float(), bn64.weight.grad.float(), bn64.bias.grad.float()


@pytest.mark.parametrize(
    ("samples", "tokens", "channels"), [(64, 64, 384), (6, 5, 24), (8, 16, 1536)]
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_rows_batch_norm_is_the_transposed_kernel(
    samples: int, tokens: int, channels: int, momentum: float | None
) -> None:
    gen = torch.Generator().manual_seed(samples + channels)
    ref = torch.nn.BatchNorm1d(channels, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=gen)
        ref.bias.normal_(generator=gen)
    ours = copy.deepcopy(ref)
    for step in range(3):  # running statistics follow step by step
        x = torch.randn(samples, tokens, channels, generator=gen) * (step + 1) + 3 * step
        x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ref = transposed(ref, x_ref)
        y_ours = rows_bn.rows_batch_norm(ours, x_ours.view(-1, channels), samples)
        assert torch.equal(y_ours, y_ref)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(ours, name), getattr(ref, name)), name
        grad = torch.randn(y_ref.shape, generator=gen)
        truth = float64_grads(ref, x, grad)
        ref.zero_grad()
        ours.zero_grad()
        y_ref.backward(grad)
        y_ours.backward(grad)
        # ATen's backward on the rows sums in float32 (the transposed kernel in float64): each
        # channel's sums stay within float32's worst-case bound for summing its rows
        rows = samples * tokens
        x_hat = (x - x.mean((0, 1))) / (x.var((0, 1), unbiased=False) + ref.eps).sqrt()
        bound = rows * 2**-24
        for name, got, terms in (
            ("bias", ours.bias.grad, grad.abs()),
            ("weight", ours.weight.grad, (grad * x_hat.reshape(rows, channels)).abs()),
        ):
            true = truth[1] if name == "weight" else truth[2]
            assert ((got - true).abs() <= bound * terms.sum(0) + 1e-6).all(), name
        error = (x_ours.grad - truth[0]).norm() / truth[0].norm()
        assert error < 1e-5

    ref.eval()
    ours.eval()
    x = torch.randn(samples, tokens, channels, generator=gen)
    with torch.no_grad():
        assert torch.equal(
            rows_bn.rows_batch_norm(ours, x.view(-1, channels), samples), transposed(ref, x)
        )
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    grad = torch.randn(samples * tokens, channels, generator=gen)
    transposed(ref, x_ref).backward(grad)
    rows_bn.rows_batch_norm(ours, x_ours.view(-1, channels), samples).backward(grad)
    torch.testing.assert_close(x_ours.grad, x_ref.grad)


def test_a_failed_build_falls_back_to_the_transposed_kernel(
    monkeypatch: pytest.MonkeyPatch, broken_kernels
) -> None:
    """A TorchInductor failure warns once, still returns this call's values, and turns
    `rows_bn.available` false so that `FastPointwiseBN` goes back to the transposed kernel."""
    broken_kernels(rows_bn)
    bn = torch.nn.BatchNorm1d(12)
    x = torch.randn(4, 6, 12)
    with pytest.warns(UserWarning, match="TorchInductor build failed"):
        y = rows_bn.rows_batch_norm(copy.deepcopy(bn), x.view(-1, 12), 4)
    torch.testing.assert_close(y, transposed(bn, x))
    assert not rows_bn.available()

    assert count_rows_bn_calls(monkeypatch) == 0


def count_rows_bn_calls(monkeypatch: pytest.MonkeyPatch) -> int:
    """Train-step a tiny Spikformer in default fast mode; how often `rows_batch_norm` ran."""
    model = create_model(
        "spikformer_4_256_cifar", downsample="lif_maxpool", T=2, embed_dim=32, depth=1, num_heads=2
    )
    fast.configure(model, "fast", device="cpu")
    calls = []
    real = rows_bn.rows_batch_norm

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rows_bn, "rows_batch_norm", counted)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    return len(calls)


def test_fast_mode_normalises_spikformer_tokens_over_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    # q, k, v, proj and the two MLP layers of the one block
    assert count_rows_bn_calls(monkeypatch) == 6


@pytest.mark.parametrize("threads", [1, 4])
def test_sum_of_squares_runs_in_row_order(threads: int) -> None:
    """ATen sums each channel's squared deviations serially; so must the compiled kernel, also
    with more threads than a few channels can keep busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for rows, channels in ((1024, 48), (4096, 384)):
            x = torch.randn(rows, channels, generator=torch.Generator().manual_seed(rows)) * 3 + 1
            mean = x.mean(0)
            deviation = x.double() - mean.double()
            serial = torch.cumsum(deviation * deviation, 0)[-1]  # a running sum: row order
            assert torch.equal(rows_bn._KERNELS("var_sum", x, mean), serial)
    finally:
        torch.set_num_threads(before)
