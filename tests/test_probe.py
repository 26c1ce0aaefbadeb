"""The probe end to end: no effect on outputs or gradients, in-place safety, life cycle,
sampling, the window-counting rule through the hooks, and the package's light public API.

Site discovery is tested in test_probe_sites.py, the window analysis without hooks in
test_probe_windows.py, frames and summaries in test_probe_records.py."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from gradprobe.downsample import PoolSpec, build_downsample, list_downsamples
from gradprobe.models import create_model
from gradprobe.probe import FRAME_COLUMNS, Probe, attach_probe

VARIANTS = list_downsamples()


def tiny_model(variant: str, T: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return create_model("sps_tokenizer_cifar", downsample=variant, T=T, embed_dim=16, img_size=8)


def images(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def train_step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    functional.reset_net(model)
    out = model(x)
    torch.nn.functional.cross_entropy(out, torch.arange(len(x)) % 10).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_probe_leaves_outputs_and_gradients_bit_equal(variant) -> None:
    model, x = tiny_model(variant), images()
    out_plain, grads_plain = train_step(model, x)
    with attach_probe(model) as probe:
        out_probed, grads_probed = train_step(model, x)
    assert torch.equal(out_plain, out_probed)
    assert grads_plain.keys() == grads_probed.keys()
    assert all(torch.equal(grads_plain[n], grads_probed[n]) for n in grads_plain)
    frame = probe.to_frame()
    assert list(frame.columns) == FRAME_COLUMNS
    assert len(frame) == 2 * 2  # two sites x T=2
    assert set(frame["variant"]) == {variant}


@pytest.mark.parametrize("after", ["add_", "relu_inplace"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_probe_survives_inplace_ops_after_the_site(variant, after) -> None:
    def run(with_probe: bool) -> tuple[torch.Tensor, Probe | None]:
        torch.manual_seed(0)
        site = build_downsample(variant, 2, 3)
        x = torch.randn(2, 2, 2, 8, 8, generator=torch.Generator().manual_seed(2))
        x.requires_grad_()
        probe = attach_probe(site, keep_maps=True) if with_probe else None
        out = site(x)
        if after == "add_":
            out.add_(1)
        else:
            out = nn.ReLU(inplace=True)(out.sub_(0.5).abs_())
        out.sum().backward()
        if probe:
            probe.remove()
        return x.grad, probe

    grad_plain, _ = run(False)
    grad_probed, probe = run(True)
    assert torch.equal(grad_plain, grad_probed)
    (record,) = probe.records
    assert record.spike_rate.shape == (2,)
    if variant != "strided_conv":
        assert (record.windows > 0).all()


def test_registering_a_full_backward_hook_instead_would_break() -> None:
    # Why the probe uses Tensor.register_hook: a module backward hook turns the output into a
    # view that a later in-place op may not modify.
    site = build_downsample("lif_maxpool", 2, 3)
    site.register_full_backward_hook(lambda *a: None)
    out = site(torch.randn(2, 1, 2, 8, 8, requires_grad=True))
    with pytest.raises(RuntimeError, match=r"inplace|in-place"):
        out.add_(1)
    with attach_probe(build_downsample("lif_maxpool", 2, 3)) as probe:
        probe.model(torch.randn(2, 1, 2, 8, 8, requires_grad=True)).add_(1).sum().backward()
    assert len(probe.records) == 1


def test_remove_disable_enable_and_context_manager() -> None:
    model, x = tiny_model("lif_maxpool"), images()
    baseline = hook_count(model)
    probe = attach_probe(model)
    assert hook_count(model) > baseline and probe.enabled
    train_step(model, x)
    assert len(probe.records) == 2
    probe.disable()
    assert hook_count(model) == baseline
    train_step(model, x)
    assert len(probe.records) == 2
    probe.enable()
    train_step(model, x)
    assert len(probe.records) == 4
    probe.clear()
    assert probe.records == [] and probe.to_frame().empty
    probe.remove()
    assert hook_count(model) == baseline
    with pytest.raises(RuntimeError, match="removed"):
        probe.enable()
    with pytest.raises(ZeroDivisionError), attach_probe(model):
        assert hook_count(model) > baseline
        raise ZeroDivisionError
    assert hook_count(model) == baseline


@pytest.mark.parametrize("via", ["call", "forward_timesteps"])
def test_every_n_steps(via) -> None:
    model, x = tiny_model("maxpool_lif"), images()
    with attach_probe(model, every=2) as probe:
        for _ in range(5):
            functional.reset_net(model)
            out = model(x) if via == "call" else model.forward_timesteps(x).mean(0)
            out.sum().backward()
            with torch.no_grad():  # evaluation passes are not steps
                model(x)
    frame = probe.to_frame()
    assert sorted(set(frame["step"])) == [0, 2, 4]
    assert probe.step == 4
    assert (frame.groupby("step").size() == 4).all()
    with pytest.raises(ValueError, match="every"):
        attach_probe(model, every=0)


def test_skipped_steps_count_but_are_not_measured() -> None:
    """Steps replayed from a CUDA graph run no hooks: `skip_step` keeps the count, and
    `samples_next` tells the harness which steps to run eagerly."""
    model, x = tiny_model("maxpool_lif"), images()
    with attach_probe(model, every=2) as probe:
        measured = []
        for _ in range(5):
            measured.append(probe.samples_next)
            if probe.samples_next:
                functional.reset_net(model)
                model(x).sum().backward()
            else:
                probe.skip_step()
        assert measured == [True, False, True, False, True]
        assert probe.step == 4
        probe.disable()
        assert not probe.samples_next  # a disabled probe measures nothing
    assert sorted(set(probe.to_frame()["step"])) == [0, 2, 4]


def test_only_windows_that_route_gradient_are_counted() -> None:
    site = build_downsample("lif_maxpool", 2, 3)
    with attach_probe(site, keep_maps=True) as probe:
        out = site(torch.randn(2, 1, 2, 8, 8, requires_grad=True))
        out[:, :, :, :2].sum().backward()  # rows 0-1 of the 4x4 window grid only
    (record,) = probe.records
    assert record.windows.tolist() == [3 * 2 * 4] * 2
    assert record.windows_total == 3 * 4 * 4
    routed = record.maps["routed"]
    assert routed[..., :2, :].all() and not routed[..., 2:, :].any()
    hit, tie = record.maps["landing"] == record.maps["argmax"], record.maps["tie"]
    for t in range(2):
        assert record.precision[t].item() == pytest.approx(hit[t][routed[t]].float().mean().item())
        assert record.tie_rate[t].item() == pytest.approx(tie[t][routed[t]].float().mean().item())


def test_strided_conv_reports_no_window() -> None:
    model = tiny_model("strided_conv")
    with attach_probe(model) as probe:
        train_step(model, images())
    frame = probe.to_frame()
    assert frame[["precision", "mass_at_argmax", "tie_rate"]].isna().all().all()
    assert (frame["windows"] == 0).all()
    assert frame["spike_rate"].between(0, 1).all() and (frame["grad_abs_mean"] > 0).all()


class FrozenPool(layer.MaxPool2d):
    """A pool run under ``torch.no_grad`` inside a pass that records gradients."""

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().forward(x_seq)


@pytest.mark.parametrize("variant", ["lif_maxpool", "maxpool_lif", "avgpool_lif"])
def test_pool_output_without_grad_skips_the_record(variant) -> None:
    site = build_downsample(variant, 2, 3)
    site.pool = FrozenPool(3, 2, 1, step_mode="m")
    lif_in = {}
    site.lif.register_forward_pre_hook(lambda m, args: lif_in.setdefault("x", args[0]))
    x = torch.randn(2, 1, 2, 8, 8, requires_grad=True)
    baseline = hook_count(site)
    with attach_probe(site) as probe:
        out = site(x)
        assert not out.requires_grad
        if lif_in["x"].requires_grad:  # lif_maxpool: x still gets a gradient, not via the pool
            lif_in["x"].sum().backward()
    assert probe.records == []
    assert hook_count(site) == baseline


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "ceil_mode", "side"),
    [
        (3, 2, 1, 1, False, 8),
        (3, 2, 1, 1, False, 7),
        (2, 2, 0, 1, False, 7),
        (3, 2, 1, 1, True, 8),
        (3, 1, 1, 1, False, 6),
        (3, 2, 1, 2, False, 9),
        (3, 3, 0, 1, True, 8),
        (4, 2, 1, 1, False, 9),
    ],
)
@pytest.mark.parametrize("pool_type", [nn.MaxPool2d, nn.AvgPool2d])
def test_tie_rate_counts_exact_ties_of_x(
    pool_type, kernel, stride, padding, dilation, ceil_mode, side
) -> None:
    # BN over a few distinct values keeps exact ties (equal inputs, equal outputs per channel).
    args = (kernel, stride, padding)
    if pool_type is nn.MaxPool2d:
        pool = nn.MaxPool2d(*args, dilation=dilation, ceil_mode=ceil_mode)
    elif dilation > 1:
        pytest.skip("average pools have no dilation")
    else:
        pool = nn.AvgPool2d(*args, ceil_mode=ceil_mode)
    model = nn.Sequential(
        layer.SeqToANNContainer(nn.BatchNorm2d(3), pool), neuron.LIFNode(step_mode="m")
    )
    x = torch.randint(0, 3, (2, 2, 3, side, side + 1), generator=torch.Generator().manual_seed(3))
    with attach_probe(model, keep_maps=True) as probe:
        functional.reset_net(model)
        model(x.float().requires_grad_()).sum().backward()
    (record,) = probe.records
    xm, tie = record.maps["x"], record.maps["tie"]
    expected = torch.zeros_like(tie)
    for i in range(tie.shape[-2]):
        for j in range(tie.shape[-1]):
            rows = [i * stride - padding + a * dilation for a in range(kernel)]
            cols = [j * stride - padding + b * dilation for b in range(kernel)]
            rows = [r for r in rows if 0 <= r < xm.shape[-2]]
            cols = [c for c in cols if 0 <= c < xm.shape[-1]]
            window = xm[..., rows, :][..., cols].flatten(-2)
            top = window.max(-1, keepdim=True).values
            expected[..., i, j] = (window == top).sum(-1) > 1
    assert expected.any() and not expected.all()
    assert torch.equal(tie, expected)


def test_own_site_tie_rate_is_exact_for_odd_geometry() -> None:
    site = build_downsample("maxpool_lif", 1, 2, pool=PoolSpec(kernel_size=5, stride=3, padding=2))
    x = torch.randint(0, 2, (1, 2, 1, 11, 10), generator=torch.Generator().manual_seed(0))
    with attach_probe(site, keep_maps=True) as probe:
        site(x.float().requires_grad_()).sum().backward()
    (record,) = probe.records
    xm = torch.nn.functional.pad(record.maps["x"], (2, 2, 2, 2), value=-math.inf)
    windows = xm.unfold(-2, 5, 3).unfold(-2, 5, 3).flatten(-2)
    expected = (windows == windows.max(-1, keepdim=True).values).sum(-1) > 1
    assert torch.equal(record.maps["tie"], expected)


def test_package_exports_the_public_api_without_heavy_imports() -> None:
    code = (
        "import sys, gradprobe.models, gradprobe; import gradprobe.probe; "
        "names = ['build_downsample', 'list_downsamples', 'register_downsample', 'PoolSpec', "
        "'NeuronConfig', 'make_neuron', 'create_model', 'list_models', 'register_model', "
        "'attach_probe', 'find_sites', 'Probe', 'summarize', '__version__']; "
        "assert all(hasattr(gradprobe, n) for n in names), names; "
        "assert set(names) <= set(gradprobe.__all__) <= set(dir(gradprobe)); "
        "assert gradprobe.attach_probe is gradprobe.probe.attach_probe; "
        "assert isinstance(gradprobe.__version__, str) and gradprobe.__version__; "
        "heavy = {'captum', 'matplotlib', 'seaborn'} & set(sys.modules); assert not heavy, heavy"
    )
    for first in ("import gradprobe", "import gradprobe.probe", "import gradprobe.models"):
        subprocess.run([sys.executable, "-c", f"{first}; {code}"], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import gradprobe

        gradprobe.nope  # noqa: B018
