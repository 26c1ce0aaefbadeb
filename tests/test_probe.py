"""The probe: no effect on outputs or gradients, in-place safety, life cycle, sampling, site
discovery on our models and on foreign spikingjelly models, and the window-counting rule."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pandas as pd
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from gradprobe import theory
from gradprobe.downsample import PoolSpec, build_downsample, list_downsamples
from gradprobe.models import create_model
from gradprobe.probe import FRAME_COLUMNS, Probe, attach_probe, find_sites, summarize

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


def test_spikingjelly_spikformer_cifar10_sites_are_found_and_reported() -> None:
    from spikingjelly.activation_based.model.spikformer import spikformer_cifar10

    torch.manual_seed(0)
    model = spikformer_cifar10(T=2)  # unmodified: stem Conv-BN-MaxPool inside SeqToANNContainer
    sites = find_sites(model)
    assert [s.name for s in sites] == ["patch_embed.stages.2", "patch_embed.stages.3"]
    saved = {}

    def keep_x(module, args, out):
        out.retain_grad()
        saved["x"] = out

    sites[0].bn.register_forward_hook(keep_x)
    with attach_probe(model, keep_maps=True) as probe:
        model(torch.rand(1, 3, 32, 32)).mean(0).sum().backward()
    frame = probe.to_frame()
    assert list(frame["site"]) == ["patch_embed.stages.2"] * 2 + ["patch_embed.stages.3"] * 2
    assert set(frame["variant"]) == {"maxpool_lif"}  # the spikingjelly stem is CML-ordered
    assert frame["precision"].tolist() == [1.0] * 4
    assert (frame["windows"] == frame["windows_total"]).all()
    (record,) = [r for r in probe.records if r.site == "patch_embed.stages.2"]
    assert record.maps["x"].shape == (2, 1, 192, 32, 32)  # [T*B] reshaped to [T, B]
    assert torch.equal(record.maps["argmax"], theory.argmax_landing(record.maps["x"]))
    assert torch.equal(record.maps["grad_x"].flatten(0, 1), saved["x"].grad)


class ForeignLIFFirst(nn.Module):
    """Foreign layouts of ConvBN-LIF-MaxPool: multi-step with Conv-BN and the pool in
    spikingjelly's SeqToANNContainer, or plain single-step modules called once per timestep."""

    def __init__(self, step_mode: str) -> None:
        super().__init__()
        conv_bn = (nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
        multi = step_mode == "m"
        self.features = layer.SeqToANNContainer(*conv_bn) if multi else nn.Sequential(*conv_bn)
        self.lif = neuron.LIFNode(step_mode=step_mode)
        self.pool = (
            layer.SeqToANNContainer(nn.MaxPool2d(3, 2, 1)) if multi else nn.MaxPool2d(3, 2, 1)
        )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.lif.step_mode == "m":
            return self.pool(self.lif(self.features(x_seq)))
        return torch.stack([self.pool(self.lif(self.features(x))) for x in x_seq])


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_foreign_lif_first_site_matches_eq7(step_mode) -> None:
    torch.manual_seed(0)
    model = ForeignLIFFirst(step_mode)
    x = torch.randn(3, 2, 1, 6, 6)
    with attach_probe(model, keep_maps=True) as probe:
        functional.reset_net(model)
        model(x).sum().backward()
    (site,) = probe.sites
    assert site.name == "features.1" and isinstance(site.pool, nn.MaxPool2d)  # no common parent
    frame = probe.to_frame()
    assert set(frame["variant"]) == {"lif_maxpool"}
    assert frame["t"].tolist() == [0, 1, 2]
    records = sorted(probe.records, key=lambda r: r.t0)
    assert len(records) == (1 if step_mode == "m" else 3)
    landing = torch.cat([r.maps["landing"] for r in records])
    spikes = torch.cat([r.maps["pooled"] for r in records])
    assert spikes.shape == (3, 2, 2, 6, 6)
    assert torch.equal(landing, theory.first_spike_landing(spikes))


class SEWAvgDown(nn.Module):
    """A SEW-ResNet-style block with an avg-down shortcut ``AvgPool → Conv1x1 → BN → LIF`` that
    reads the block input, registered right after the main path's conv-BN-LIF; then a real CML
    site. In registration order the main path's BN, LIF and the shortcut's AvgPool look like
    ConvBN-LIF-AvgPool, but that pool never sees the LIF's spikes."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Sequential(
            layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, 2, 1), nn.BatchNorm2d(4)),
            neuron.LIFNode(step_mode="m"),
        )
        self.shortcut = nn.Sequential(
            layer.SeqToANNContainer(nn.AvgPool2d(2), nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4)),
            neuron.LIFNode(step_mode="m"),
        )
        self.cml = nn.Sequential(
            layer.SeqToANNContainer(
                nn.Conv2d(4, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.MaxPool2d(3, 2, 1)
            ),
            neuron.LIFNode(step_mode="m"),
        )

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.cml(self.main(x_seq) + self.shortcut(x_seq))


@pytest.mark.parametrize("input_grad", [False, True])
def test_foreign_site_matched_across_blocks_is_dropped_after_its_first_forward(input_grad) -> None:
    torch.manual_seed(0)
    model = SEWAvgDown()
    assert [s.name for s in find_sites(model)] == ["main.0.1", "cml"]  # the order is fooled
    x = torch.randn(2, 2, 2, 8, 8, requires_grad=input_grad)  # raw input: its pool has no grad
    with warnings.catch_warnings(record=True) as caught, attach_probe(model) as probe:
        warnings.simplefilter("always")
        for _ in range(2):
            functional.reset_net(model)
            model(x).sum().backward()
    dropped = [w for w in caught if "main.0.1" in str(w.message)]
    assert len(dropped) == 1 and "pool" in str(dropped[0].message)
    assert [s.name for s in probe.sites] == ["cml"]
    frame = probe.to_frame()
    assert set(frame["site"]) == {"cml"} and set(frame["variant"]) == {"maxpool_lif"}
    assert frame["precision"].tolist() == [1.0] * 4  # two steps x T=2
    assert hook_count(model) == 0


class NeuronReadsElsewhere(nn.Module):
    """BN → MaxPool in one block, and a sibling block's LIF that reads the block input, not the
    pool: ConvBN-MaxPool-LIF by registration order only."""

    def __init__(self) -> None:
        super().__init__()
        self.a = layer.SeqToANNContainer(
            nn.Conv2d(1, 2, 3, 1, 1), nn.BatchNorm2d(2), nn.MaxPool2d(2)
        )
        self.b = neuron.LIFNode(step_mode="m")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.a(x_seq).sum() + self.b(x_seq).sum()


def test_foreign_site_whose_neuron_reads_elsewhere_is_dropped() -> None:
    model = NeuronReadsElsewhere()
    with pytest.warns(UserWarning, match=r"'a\.1'.*neuron") as caught, attach_probe(model) as probe:
        functional.reset_net(model)
        model(torch.randn(2, 1, 1, 6, 6, requires_grad=True)).backward()
    assert len(caught) == 1 and probe.sites == [] and probe.records == []


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


def test_sites_by_name_and_bad_names() -> None:
    model = tiny_model("lif_maxpool")
    assert [s.name for s in find_sites(model, ["stem.stages.stage4"])] == ["stem.stages.stage4"]
    named = find_sites(model, ["stem.stages.stage1"])  # ConvBN-LIF, no pool: a window-less site
    assert named[0].pool is None
    with pytest.raises(ValueError, match=r"no module 'stem\.nope'"):
        find_sites(model, ["stem.nope"])
    with pytest.raises(ValueError, match="holds no downsampling site"):
        find_sites(model, ["head"])
    with pytest.raises(ValueError, match="no downsampling site found"):
        attach_probe(nn.Sequential(nn.Linear(2, 2)))


def test_summarize_weights_by_windows() -> None:
    frame = pd.DataFrame(
        [
            (0, "a", "v", 0, 1.0, 1.0, 0.0, 0.5, 3, 4, 1.0),
            (0, "a", "v", 1, 0.0, 0.0, 1.0, 0.1, 1, 4, 1.0),
            (0, "b", "w", 0, math.nan, math.nan, math.nan, 0.2, 0, 0, 1.0),
        ],
        columns=FRAME_COLUMNS,
    )
    out = summarize(frame).set_index("site")
    assert out.loc["a", "precision"] == 0.75 and out.loc["a", "tie_rate"] == 0.25
    assert out.loc["a", "spike_rate"] == pytest.approx(0.3) and out.loc["a", "windows"] == 4
    assert math.isnan(out.loc["b", "precision"]) and out.loc["b", "windows"] == 0
