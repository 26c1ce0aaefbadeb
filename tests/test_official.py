"""`benchmarks/official.py`: the official code's files, loaded on a legacy spikingjelly.

The official code and spikingjelly 0.0.0.0.12 are not part of this repository, so these tests
write small stand-ins with the same import paths and the same hard-coded ``backend='cupy'``.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks import bench, measure, official, throughput

LEGACY_NEURON = '''
import torch
from torch import nn


class MultiStepLIFNode(nn.Module):
    """Stands in for spikingjelly 0.0.0.0.12's node: 'cupy' fails without CuPy, as there."""

    def __init__(self, tau=2.0, v_threshold=1.0, detach_reset=False, backend="torch"):
        super().__init__()
        if backend != "torch":
            raise ValueError(f"backend {backend!r} needs CuPy")
        self.backend, self.tau, self.v_threshold = backend, tau, v_threshold
        self.resets = 0

    def forward(self, x_seq):
        return x_seq

    def reset(self):
        self.resets += 1
'''
LEGACY_FUNCTIONAL = """
def reset_net(net):
    for module in net.modules():
        if hasattr(module, "reset"):
            module.reset()
"""
# an official-style file: the old import path, 'cupy' hard-coded, a timm registration; the
# network is ours (the official code cannot be shipped), so its weights pair up exactly
OFFICIAL_FILE = """
from spikingjelly.clock_driven.neuron import MultiStepLIFNode
from timm.models.registry import register_model

from gradprobe.models import create_model


@register_model
def {factory}(pretrained=False, T=4, num_classes=10, **config):
    assert config["embed_dims"] == 384 and config["depths"] == 4, config
    model = create_model("{model}", downsample="{variant}", T=T, num_classes=num_classes)
    model.lif = MultiStepLIFNode(tau=2.0, detach_reset=True, backend="cupy")
    return model
"""


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    package = tmp_path / "legacy" / "spikingjelly"
    (package / "clock_driven").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "clock_driven" / "__init__.py").write_text("")
    (package / "clock_driven" / "neuron.py").write_text(LEGACY_NEURON)
    (package / "clock_driven" / "functional.py").write_text(LEGACY_FUNCTIONAL)
    return package.parent


SPIKFORMER = "spikformer_4_384_cifar"


def official_file(
    folder: Path, factory: str = "spikformer", variant: str = "lif_maxpool", model: str = SPIKFORMER
) -> Path:
    file = folder / f"{factory}_{variant}_model.py"
    text = OFFICIAL_FILE.format(factory=factory, variant=variant, model=model)
    file.write_text(textwrap.dedent(text))
    return file


def test_an_official_file_loads_on_the_legacy_package_with_the_torch_backend(
    legacy: Path, tmp_path: Path
) -> None:
    model_name, variant, factory, reset_net = official.load_official(
        official_file(tmp_path), legacy
    )
    assert (model_name, variant) == (SPIKFORMER, "lif_maxpool")
    model = factory(T=2, **official.CIFAR_CONFIG)
    assert model.lif.backend == "torch"  # asked for 'cupy', which the stand-in refuses
    reset_net(model)
    assert model.lif.resets == 1  # the legacy package's reset_net


@pytest.mark.parametrize(
    ("factory", "model", "variant"),
    [
        ("CML_Spikformer", SPIKFORMER, "maxpool_lif"),
        ("Spikingformer", "spikingformer_4_384_cifar", "lif_maxpool"),
        ("Spikingformer", "spikingformer_4_384_cifar", "maxpool_lif"),  # CML's cifar10/model.py
    ],
)
def test_the_factory_names_the_backbone_and_the_logits_the_variant(
    factory: str, model: str, variant: str, legacy: Path, tmp_path: Path
) -> None:
    file = official_file(tmp_path, factory, variant, model)
    assert official.variants([file], legacy) == {(model, variant): file}


def test_bad_official_files_are_named(legacy: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such\.py"):
        official.load_official(tmp_path / "no_such.py", legacy)
    other = tmp_path / "other.py"
    other.write_text("def vit():\n    pass\n")
    with pytest.raises(ValueError, match=r"other.py.*none of the official factories.*spikformer"):
        official.load_official(other, legacy)
    first = official_file(tmp_path)
    second = tmp_path / "copy.py"
    second.write_text(first.read_text())
    with pytest.raises(ValueError, match=r"both build \('spikformer_4_384_cifar', 'lif_maxpool'\)"):
        official.variants([first, second], legacy)
    # a file whose network none of our variants computes (a width our models do not have)
    foreign = tmp_path / "foreign.py"
    foreign.write_text(
        "from torch import nn\n"
        "def spikformer(T, num_classes, **config):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))\n"
    )
    with pytest.raises(ValueError, match="state entries against"):
        official.load_official(foreign, legacy)


class Ours(nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.norm1 = nn.LayerNorm(width)
        self.head = nn.Linear(width, 4)


class Theirs(nn.Module):
    """The same layers under other names, its LayerNorm elsewhere in the order."""

    def __init__(self) -> None:
        super().__init__()
        self.norm_first = nn.LayerNorm(3)
        self.proj_conv = nn.Conv2d(2, 3, 3)
        self.proj_bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 4)


def test_load_weights_pairs_layers_in_order_leaving_out_layernorms() -> None:
    ours, theirs = Ours(), Theirs()
    ours.bn.running_mean.fill_(0.5)
    with torch.no_grad():
        ours.norm1.weight.fill_(2.0)
    official.load_weights(theirs, ours)
    assert torch.equal(theirs.proj_conv.weight, ours.conv.weight)
    assert torch.equal(theirs.proj_bn.running_mean, ours.bn.running_mean)
    assert torch.equal(theirs.fc.bias, ours.head.bias)
    assert torch.equal(theirs.norm_first.weight, torch.ones(3))  # LayerNorms are not paired
    with pytest.raises(ValueError, match=r"official proj_conv.weight \(3, 2, 3, 3\) pairs with"):
        official.load_weights(theirs, Ours(width=5))


def test_the_official_model_trains_on_reference_modes_weights_and_batch(
    legacy: Path, tmp_path: Path
) -> None:
    args = argparse.Namespace(device="cpu", legacy=legacy, seed=0, T=2, batch_size=2)
    code = official.OfficialModel(official_file(tmp_path), args)
    bench_args = argparse.Namespace(
        seed=0, T=2, batch_size=2, device="cpu", exact=False, cuda_graph="off", memory="none"
    )
    ours = bench.Bench(SPIKFORMER, "lif_maxpool", bench_args, serving="reference")
    assert torch.equal(code.images, ours.images) and torch.equal(code.labels, ours.labels)
    assert code.params == ours.params["reference"]
    assert code.max_logit_diff < 1e-5
    assert code.train_step() > 0 and code.eval_step() > 0
    with pytest.raises(ValueError, match="CPU only"):
        official.OfficialModel(
            official_file(tmp_path), argparse.Namespace(**{**vars(args), "device": "meta"})
        )


@pytest.mark.parametrize("isolate", ["on", "off"])
def test_throughput_times_the_official_code_beside_reference_mode(
    isolate: str,
    legacy: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    peaks = {"reference": 4.0, "fast": 2.0, "official": 5.0}  # MiB; the subprocesses are tested
    monkeypatch.setattr(measure, "cpu_peak_mb", lambda name, variant, mode, args: peaks[mode])
    args = ["--models", SPIKFORMER, "--downsample", "lif_maxpool", "--batch-size", "2"]
    args += ["--T", "2", "--repeats", "1", "--warmup", "0", "--device", "cpu"]
    args += ["--isolate", isolate, "--threads", "1"]
    args += ["--legacy", str(legacy), "--official", str(official_file(tmp_path))]
    row = throughput.main(args).iloc[0]
    assert bool(row["isolated"]) is (isolate == "on")
    assert row["params_official"] == row["params"]
    assert row["train_ref_over_official"] == pytest.approx(
        row["train_s_reference"] / row["train_s_official"]
    )
    assert row["train_x_over_official"] == pytest.approx(
        row["train_s_official"] / row["train_s_fast"]
    )
    assert row["official_logit_diff"] < 1e-5
    assert row["mem_x_over_official"] == pytest.approx(0.4)
    out = capsys.readouterr().out
    assert "reference / official: train" in out and "peak memory 0.40x" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--official needs --legacy"),
        (["--legacy", "LEGACY", "--device", "cuda"], "CPU only, not --device cuda"),
        (["--legacy", "LEGACY", "--downsample", "maxpool_lif"], "add them to --models"),
        (["--legacy", "LEGACY", "--models", "spikingformer_4_384_cifar"], "add them to --models"),
    ],
)
def test_throughput_rejects_bad_official_options_before_timing(
    extra: list[str], message: str, legacy: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--models", SPIKFORMER, "--official", str(official_file(tmp_path))]
    args += [str(legacy) if a == "LEGACY" else a for a in extra]
    with pytest.raises(SystemExit):
        throughput.main(args)
    assert message in capsys.readouterr().err


def test_the_official_codes_peak_memory_is_measured_like_reference_modes(
    legacy: Path, tmp_path: Path
) -> None:
    args = argparse.Namespace(
        device="cpu", legacy=legacy, seed=0, T=2, batch_size=2, official=[official_file(tmp_path)]
    )
    memory = measure.child_memory(SPIKFORMER, "lif_maxpool", "official", args)
    assert memory["peak_mb"] >= 0 and memory["rss_mb"] > 0
