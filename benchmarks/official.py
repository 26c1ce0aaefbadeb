"""The official Spikformer CIFAR-10 code, run on CPU beside reference mode.

The official code is not part of this repository. `benchmarks.throughput` takes a checkout's
model file with ``--official`` and spikingjelly 0.0.0.0.12 unpacked with ``--legacy``
(`benchmarks.official_lif` says how to unpack it):

    python -m benchmarks.throughput --models spikformer_4_384_cifar \\
        --downsample lif_maxpool maxpool_lif --legacy sj-0.0.0.0.12/site \\
        --official spikformer/cifar10/model.py Spikingformer-CML/cifar10/CML_Spikformer.py

Each file is recognised by the factory it registers (`FACTORIES`), which names the backbone:
``spikformer`` (ZK-Zhou/spikformer ``cifar10/model.py``) and ``CML_Spikformer``
(zhouchenlin2096/Spikingformer-CML ``cifar10/CML_Spikformer.py``) are ``spikformer_4_384_cifar``,
``Spikingformer`` (zhouchenlin2096/Spikingformer ``cifar10/model.py``, and the CML repository's
``cifar10/model.py`` under the same name) is ``spikingformer_4_384_cifar``. The downsampling
variant is recognised by computation (`identify`): the variant whose reference-mode network,
given the same weights, reproduces the file's logits. `load_official` imports the file with
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
from gradprobe.labels import BUILTIN_ORDER
from gradprobe.models import create_model

FACTORIES = {
    "spikformer": "spikformer_4_384_cifar",
    "CML_Spikformer": "spikformer_4_384_cifar",
    "Spikingformer": "spikingformer_4_384_cifar",
}
#: logits of the same network in the two codes differ by float rounding (~1e-7), or ~1e-4 where
#: rounding flips a spike; another variant's differ by ~0.1
SAME_NETWORK_ATOL = 1e-2
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


def load_official(file: Path, legacy: Path) -> tuple[str, str, callable, callable]:
    """Import an official model file and identify it; return ``(model, variant, factory,
    reset_net)``: our backbone and downsampling variant that compute the file's network, its
    factory, and the legacy ``reset_net``.

    Raises:
        FileNotFoundError: ``file`` does not exist, or ``legacy`` holds no legacy package.
        ValueError: the file registers none of `FACTORIES`, or none of our variants computes it.
    """
    model, factory, reset_net = import_official(file, legacy)
    return model, identify(file, model, factory, reset_net), factory, reset_net


@functools.cache
def import_official(file: Path, legacy: Path) -> tuple[str, callable, callable]:
    """Import an official model file (once per process); return ``(model, factory,
    reset_net)``, the backbone named by the factory it registers. Raises as `load_official`."""
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
            f"Spikingformer-CML cifar10/CML_Spikformer.py: 'CML_Spikformer'; Spikingformer "
            f"cifar10/model.py: 'Spikingformer')"
        )
    return FACTORIES[found[0]], getattr(module, found[0]), legacy_functional.reset_net


def identify(file: Path, model: str, factory: callable, reset_net: callable) -> str:
    """The downsampling variant whose reference-mode ``model`` computes the file's network: the
    one whose logits the file's model comes closest to from the same weights, on a batch of 2
    at T = 2, which must be within `SAME_NETWORK_ATOL` (a spike flipped by float rounding moves
    them by ~1e-4; another variant, by ~0.1)."""
    gaps = {}
    for variant in BUILTIN_ORDER:  # the paper's four: the others share their forwards
        ours, theirs, images, _ = _same_weights(model, variant, factory, T=2, batch_size=2, seed=0)
        gaps[variant] = _logit_gap(ours, theirs, reset_net, images)
    best = min(gaps, key=gaps.get)
    if gaps[best] > SAME_NETWORK_ATOL:
        raise ValueError(
            f"--official {str(file)!r}: none of our {model} variants computes its network "
            f"(largest logit difference per variant: {gaps})"
        )
    return best


def _same_weights(
    model: str, variant: str, factory: callable, T: int, batch_size: int, seed: int
) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """Our reference-mode network, the file's network on its weights, and a batch (images,
    labels): the weights and batch `benchmarks.bench.Bench` draws from ``seed``, in its order."""
    torch.manual_seed(seed)
    ours = create_model(model, downsample=variant, T=T, num_classes=10)
    images = torch.rand(batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (batch_size,))
    fast.configure(ours, "reference", device="cpu")
    theirs = factory(T=T, **CIFAR_CONFIG)
    load_weights(theirs, ours)
    return ours, theirs, images, labels


def _logit_gap(
    ours: nn.Module, theirs: nn.Module, reset_net: callable, images: torch.Tensor
) -> float:
    """Largest logit difference of the two networks on ``images``, in training mode (batch
    statistics, as in the timed steps)."""
    with torch.no_grad():
        functional.reset_net(ours)
        expected = ours(images)
        functional.reset_net(ours)
        reset_net(theirs)
        gap = float((theirs(images) - expected).abs().max())
        reset_net(theirs)
    return gap


def variants(files: list[Path], legacy: Path) -> dict[tuple[str, str], Path]:
    """``{(model, variant): file}`` for the given official files; two files for one model and
    variant is an error."""
    found: dict[tuple[str, str], Path] = {}
    for file in files:
        key = load_official(file, legacy)[:2]
        if key in found:
            raise ValueError(f"--official: {found[key]} and {file} both build {key}")
        found[key] = Path(file)
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

    def __init__(
        self, file: Path, args: argparse.Namespace, key: tuple[str, str] | None = None
    ) -> None:
        """``key``: the ``(model, variant)`` the file computes, as `variants` found it (else it
        is identified again here)."""
        if torch.device(args.device).type != "cpu":
            raise ValueError("--official runs on CPU only (its CUDA backend needs CuPy)")
        if key is None:
            key = load_official(file, args.legacy)[:2]
        _, factory, self.reset_net = import_official(file, args.legacy)
        ours, self.model, self.images, self.labels = _same_weights(
            *key, factory, T=args.T, batch_size=args.batch_size, seed=args.seed
        )
        self.params = sum(p.numel() for p in self.model.parameters())
        self.max_logit_diff = _logit_gap(ours, self.model, self.reset_net, self.images)
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
