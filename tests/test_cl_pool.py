"""`gradprobe.fast.cl_pool`: max-pooling through channels-last memory, bit for bit the plain call."""

import pytest
import torch
from spikingjelly.activation_based import functional, layer

from gradprobe import fast
from gradprobe.fast import cl_pool
from gradprobe.fast.kernels import KernelSet, compiler_available
from gradprobe.models import create_model

needs_compiler = pytest.mark.skipif(not compiler_available(), reason="needs a C++ compiler")


def maps(kind: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "spikes":  # binary: most windows tie, the first-index rule decides
        return (torch.rand(shape, generator=gen) < 0.3).float()
    return torch.randn(shape, generator=gen)


def pool_and_grad(fn, x: torch.Tensor, grad: torch.Tensor, **geometry) -> tuple:
    x = x.clone().requires_grad_()
    y, indices = fn(x, return_indices=True, **geometry)
    y.backward(grad)
    return y, indices, x.grad


GEOMETRIES = [
    {"kernel_size": 3, "stride": 2, "padding": 1},  # the references' MaxPool2d(3, 2, 1)
    {"kernel_size": 2, "stride": 2, "padding": 0},
    {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
    {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)},
]


@needs_compiler
@pytest.mark.parametrize("kind", ["spikes", "real"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("shape", [(8, 48, 32, 32), (3, 5, 9, 7)])
def test_output_indices_and_gradient_are_the_plain_calls(kind, geometry, shape) -> None:
    x = maps(kind, shape)
    plain = torch.nn.functional.max_pool2d(x, **geometry)
    grad = torch.randn(plain.shape, generator=torch.Generator().manual_seed(1))
    ours = pool_and_grad(cl_pool.max_pool2d, x, grad, **geometry)
    ref = pool_and_grad(torch.nn.functional.max_pool2d, x, grad, **geometry)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)
    assert ours[0].is_contiguous() and ours[2].is_contiguous()
    for context in (torch.no_grad, torch.inference_mode):  # the eval paths
        with context():
            assert torch.equal(cl_pool.max_pool2d(x, **geometry), plain)
            assert torch.equal(cl_pool.max_pool2d(x, return_indices=True, **geometry)[1], ref[1])


@needs_compiler
def test_binary_windows_route_to_their_first_spike() -> None:
    """Eq. (7)'s mechanism survives the channels-last route: a window of tied spikes keeps its
    first one in window order (row-major), and backward sends the gradient there alone."""
    x = torch.zeros(1, 16, 4, 4)
    x[0, :, 0, 1] = 1  # window (0, 0) of a 2x2/2 pool: positions (0,0) (0,1) (1,0) (1,1)
    x[0, :, 1, 0] = 1
    x[0, :, 1, 1] = 1
    x.requires_grad_()
    y, indices = cl_pool.max_pool2d(x, 2, 2, return_indices=True)
    assert (indices[0, :, 0, 0] == 1).all()  # flat index of (0, 1), the first spike
    y[0, :, 0, 0].sum().backward()
    expected = torch.zeros(1, 16, 4, 4)
    expected[0, :, 0, 1] = 1
    assert torch.equal(x.grad, expected)


@needs_compiler
def test_bfloat16_maps_pool_like_the_plain_call() -> None:
    x = maps("real", (4, 24, 16, 16)).bfloat16()
    assert torch.equal(cl_pool.max_pool2d(x, 3, 2, 1), torch.nn.functional.max_pool2d(x, 3, 2, 1))


def test_other_inputs_take_the_plain_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = torch.nn.functional.max_pool2d

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "max_pool2d", counted)
    cl_pool.max_pool2d(torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last), 2)
    cl_pool.max_pool2d(torch.randn(3, 8, 8), 2)  # unbatched
    cl_pool.max_pool2d(torch.randn(2, 3, 8, 8)[..., ::2], 2)  # a strided view
    assert len(calls) == 3
    monkeypatch.setattr(cl_pool, "available", lambda: False)
    cl_pool.max_pool2d(torch.randn(2, 3, 8, 8), 2)
    assert len(calls) == 4


def test_a_failed_build_warns_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, broken_kernels
) -> None:
    """A TorchInductor failure warns once, still returns this call's values and leaves the
    set unavailable, so that every later pool takes the plain call."""
    kernels = broken_kernels(cl_pool)
    monkeypatch.setattr("gradprobe.fast.kernels.compiler_available", lambda: True)
    x = maps("real", (2, 8, 6, 6))
    with pytest.warns(UserWarning, match="channels-last max-pool: TorchInductor build failed"):
        y = cl_pool.max_pool2d(x, 3, 2, 1)
    assert torch.equal(y, torch.nn.functional.max_pool2d(x, 3, 2, 1))
    assert not cl_pool.available() and kernels.broken


def test_kernel_set_runs_eager_without_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gradprobe.fast.kernels.compiler_available", lambda: False)
    kernels = KernelSet("demo", "eager", {"double": lambda x: x * 2})
    assert not kernels.available()
    assert torch.equal(kernels("double", torch.ones(3)), torch.full((3,), 2.0))
    assert kernels.compiled == {}


@pytest.mark.parametrize("downsample", ["lif_maxpool", "maxpool_lif"])
def test_fast_mode_switches_the_pools_and_reference_mode_restores_them(downsample) -> None:
    model = create_model("sps_tokenizer_cifar", downsample=downsample, T=2)
    pools = [m for m in model.modules() if isinstance(m, layer.MaxPool2d)]
    assert pools
    plan = fast.configure(model, "fast", device="cpu", exact=True)  # bit-identical: exact too
    assert all(type(m) is cl_pool.FastMaxPool2d for m in pools)
    assert plan.channels_last_pools is cl_pool.available()
    plan = fast.configure(model, "reference", device="cpu")
    assert all(type(m) is layer.MaxPool2d for m in pools)
    assert not plan.channels_last_pools


@needs_compiler
def test_multi_step_pool_matches_spikingjelly() -> None:
    ours = cl_pool.FastMaxPool2d(3, 2, 1, step_mode="m")
    ref = layer.MaxPool2d(3, 2, 1, step_mode="m")
    x = maps("real", (2, 3, 16, 9, 9))
    assert torch.equal(ours(x), ref(x))
    ours.step_mode = ref.step_mode = "s"
    assert torch.equal(ours(x[0]), ref(x[0]))
    functional.set_step_mode(ours, "m")
    with pytest.raises(ValueError, match=r"\[T, N, C, H, W\]"):
        ours(x[0])


@needs_compiler
def test_backward_builds_no_zeros_for_the_indices(zeros_made) -> None:
    """The indices output has no gradient; autograd must not materialise one (an int64 tensor of
    zeros the size of the output, per call) for the backward."""
    x = maps("real", (4, 8, 16, 16)).requires_grad_()
    y = cl_pool.max_pool2d(x, 3, 2, 1)
    with zeros_made() as seen:
        y.sum().backward()
    assert not [made for made in seen.made if made[1:] == ((4, 8, 8, 8), torch.int64)]
    ref = x.detach().requires_grad_()
    torch.nn.functional.max_pool2d(ref, 3, 2, 1).sum().backward()
    assert torch.equal(x.grad, ref.grad)
