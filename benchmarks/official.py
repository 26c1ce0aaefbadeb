"""The official Spikformer CIFAR-10 code, run on CPU beside reference mode.

The official code is not part of this repository. `benchmarks.throughput` takes a checkout's
model file with ``--official`` and spikingjelly 0.0.0.0.12 unpacked with ``--legacy``
(`benchmarks.official_lif` says how to unpack it):

    python -m benchmarks.throughput --models spikformer_4_384_cifar \\
        --downsample lif_maxpool maxpool_lif --legacy sj-0.0.0.0.12/site \\
        --official spikformer/cifar10/model.py Spikingformer-CML/cifar10/CML_Spikformer.py

Each file is recognised by the factory it registers (`FACTORIES`): ``spikformer`` in
ZK-Zhou/spikformer's ``cifar10/model.py`` is the ConvBN-LIF-MaxPool tokenizer (``lif_maxpool``),
``CML_Spikformer`` in zhouchenlin2096/Spikingformer-CML's ``cifar10/CML_Spikformer.py`` is
ConvBN-MaxPool-LIF (``maxpool_lif``). `load_official` imports the file with
``spikingjelly.clock_driven`` served by the legacy package and every ``MultiStepLIFNode`` on
``backend='torch'``: the files hard-code ``'cupy'``, which needs a GPU, and the spec's section 1
says to switch it for CPU use (the same maths, looping over T in Python). Nothing else of the
file is changed. `OfficialModel` builds the CIFAR-10 4-384 configuration of the files'
``cifar10.yml`` and loads reference mode's initial weights into it (`load_weights`), so both
codes train the same network on the same batch.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import importlib.util
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch
from spikingjelly.activation_based import functional
from torch import nn

from benchmarks.official_lif import LEGACY_NAME, load_legacy
from gradprobe import fast
from gradprobe.models import create_model

MODEL = "spikformer_4_384_cifar"
FACTORIES = {"spikformer": "lif_maxpool", "CML_Spikformer": "maxpool_lif"}
# cifar10.yml of the official code: 4-384, 12 heads, MLP ratio 4, patch 4, T = 4
CIFAR_CONFIG = {
    "img_size_h": 32,
    "img_size_w": 32,
    "patch_size": 4,
    "embed_dims": 384,
    "num_heads": 12,
    "mlp_ratios": 4,
    "in_channels": 3,
    "num_classes": 10,
    "qkv_bias": False,
    "norm_layer": functools.partial(nn.LayerNorm, eps=1e-6),
    "depths": 4,
    "sr_ratios": 1,
}


def _serve_legacy_spikingjelly(legacy: Path) -> ModuleType:
    """Make ``spikingjelly.clock_driven`` the legacy package's, with ``MultiStepLIFNode`` on
    the torch backend; return the legacy ``clock_driven.functional``. spikingjelly 2.0 has no
    ``clock_driven``, so nothing of it is shadowed."""
    neuron = load_legacy(legacy)

    class MultiStepLIFNode(neuron.MultiStepLIFNode):
        """The legacy node with ``backend='torch'`` whatever the caller asks for."""

        def __init__(self, *args, backend: str = "torch", **kwargs) -> None:
            super().__init__(*args, backend="torch", **kwargs)

    shim = ModuleType("spikingjelly.clock_driven.neuron")
    shim.__dict__.update(vars(neuron))
    shim.MultiStepLIFNode = MultiStepLIFNode
    sys.modules["spikingjelly.clock_driven"] = sys.modules[f"{LEGACY_NAME}.clock_driven"]
    sys.modules["spikingjelly.clock_driven.neuron"] = shim
    return importlib.import_module(f"{LEGACY_NAME}.clock_driven.functional")


@functools.cache
def load_official(file: Path, legacy: Path) -> tuple[str, callable, callable]:
    """Import an official model file (once per process); return
    ``(variant, factory, reset_net)``.

    Raises:
        FileNotFoundError: ``file`` does not exist, or ``legacy`` holds no legacy package.
        ValueError: the file registers none of `FACTORIES`.
    """
    if not Path(file).is_file():
        raise FileNotFoundError(f"--official {str(file)!r}: no such file")
    legacy_functional = _serve_legacy_spikingjelly(legacy)
    digest = hashlib.sha1(str(Path(file).resolve()).encode()).hexdigest()[:8]
    name = f"official_{Path(file).stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # timm's register_model looks the module up by name
    with warnings.catch_warnings():  # timm's notes on the files' old import paths and names
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        spec.loader.exec_module(module)
    found = [name for name in FACTORIES if callable(getattr(module, name, None))]
    if not found:
        raise ValueError(
            f"--official {str(file)!r} defines none of the official factories "
            f"{sorted(FACTORIES)} (ZK-Zhou/spikformer cifar10/model.py: 'spikformer'; "
            f"Spikingformer-CML cifar10/CML_Spikformer.py: 'CML_Spikformer')"
        )
    return FACTORIES[found[0]], getattr(module, found[0]), legacy_functional.reset_net


def variants(files: list[Path], legacy: Path) -> dict[str, Path]:
    """``{variant: file}`` for the given official files (each file imported once to see which
    factory it registers); two files for one variant is an error."""
    found: dict[str, Path] = {}
    for file in files:
        variant = load_official(file, legacy)[0]
        if variant in found:
            raise ValueError(f"--official: {found[variant]} and {file} both build {variant!r}")
        found[variant] = Path(file)
    return found


def _without_layernorms(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    # LayerNorms are built but never called in either code (spec section 2.1); their place in
    # the module order differs, so the pairing leaves them out.
    norms = {name for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    return [
        (key, value)
        for key, value in model.state_dict().items()
        if key.rpartition(".")[0] not in norms
    ]


def load_weights(official: nn.Module, ours: nn.Module) -> None:
    """Copy ``ours``' state into ``official``: both list their layers in forward order, so the
    state entries pair up in order (LayerNorms aside); every pair must have one shape."""
    theirs, mine = _without_layernorms(official), _without_layernorms(ours)
    if len(theirs) != len(mine):
        raise ValueError(f"{len(theirs)} official state entries against {len(mine)} of ours")
    state = official.state_dict()
    for (key, value), (our_key, our_value) in zip(theirs, mine, strict=True):
        if value.shape != our_value.shape:
            raise ValueError(
                f"official {key} {tuple(value.shape)} pairs with our {our_key} "
                f"{tuple(our_value.shape)}"
            )
        state[key] = our_value.detach().clone()
    official.load_state_dict(state)


class OfficialModel:
    """The official code's train and eval steps, on reference mode's weights and batch.

    A train step is reset → forward → cross-entropy → backward → AdamW step, as `Bench` times
    reference mode; the official training script resets the network after each step, which
    costs the same. ``max_logit_diff`` is the largest difference between the two codes' logits
    on the benchmark batch, from the same weights in training mode: float rounding only, when
    the two compute one network.
    """

    def __init__(self, file: Path, args: argparse.Namespace) -> None:
        if torch.device(args.device).type != "cpu":
            raise ValueError("--official runs on CPU only (its CUDA backend needs CuPy)")
        variant, factory, self.reset_net = load_official(file, args.legacy)
        torch.manual_seed(args.seed)  # the weights and batch of `Bench`, drawn in its order
        ours = create_model(MODEL, downsample=variant, T=args.T, num_classes=10)
        self.images = torch.rand(args.batch_size, 3, 32, 32)
        self.labels = torch.randint(0, 10, (args.batch_size,))
        fast.configure(ours, "reference", device="cpu", retain_memory=False)
        self.model = factory(T=args.T, **CIFAR_CONFIG)
        load_weights(self.model, ours)
        self.params = sum(p.numel() for p in self.model.parameters())
        with torch.no_grad():
            functional.reset_net(ours)
            expected = ours(self.images)
            self.reset_net(self.model)
            self.max_logit_diff = float((self.model(self.images) - expected).abs().max())
            self.reset_net(self.model)
        del ours
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.steps = {"train": self.train_step, "eval": self.eval_step}

    def train_step(self) -> float:
        start = time.perf_counter()
        self.reset_net(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.images)
        torch.nn.functional.cross_entropy(logits, self.labels).backward()
        self.optimizer.step()
        return time.perf_counter() - start

    def eval_step(self) -> float:
        self.model.eval()
        start = time.perf_counter()
        with torch.inference_mode():
            self.reset_net(self.model)
            self.model(self.images)
        seconds = time.perf_counter() - start
        self.model.train()
        return seconds
