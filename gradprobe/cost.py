"""Cost accounting: LIF neurons per downsampling site, synaptic operations and energy.

For one model and variant, `measure_cost` runs one batch and returns a row per downsampling
site, one for all sites together and one for the whole model:

* ``lif_neurons``: spiking neurons per image and per time step (the elements each neuron
  module integrates). At a site, ``lif_maxpool`` spikes the full conv map and ``maxpool_lif`` /
  ``avgpool_lif`` / ``strided_conv`` the pooled one, so for an even side H the CML/baseline ratio
  is exactly ``(H/2)² / H² = 0.25``; for an odd side it is ``ceil(H/2)² / H²``.
* ``firing_rate``: mean spikes per neuron per time step on the batch.
* ``macs``: multiply-accumulates of synaptic ops (conv, linear, matmul) with no binary operand,
  e.g. the first conv on the image, or Spikformer's projections of spike sums.
* ``acs_dense``: synaptic ops with a binary (spike) operand, counted as if every input spiked.
* ``sops``: synaptic operations actually triggered by the batch's spikes (spikingjelly's
  `SynOpCounter`).
* ``energy_mj``: ``E_MAC·macs + E_AC·sops``, with the 45 nm figures that the Spikingformer line
  of work uses (E_MAC 4.6 pJ, E_AC 0.9 pJ). BatchNorm is left out, as it folds into the
  preceding conv at inference.

Operation counts are per image and summed over the T time steps. Firing rates, SOPs and energy
depend on the weights and the data: pass a real batch to a trained model for meaningful ones.

Run ``python -m gradprobe.cost --model spikformer_4_384_cifar`` to print the table for all
four variants.
"""

from __future__ import annotations

from collections.abc import Iterable
from math import prod

import pandas as pd
import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.op_counter import (
    BaseCounter,
    DispatchCounterMode,
    MACCounter,
    SynOpCounter,
    is_binary_tensor,
)
from torch import nn

from gradprobe.downsample import DOWNSAMPLES, list_downsamples
from gradprobe.models import MODELS, create_model
from gradprobe.neuron import is_spiking_neuron
from gradprobe.registry import UnknownNameError

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
BASELINE = "lif_maxpool"

aten = torch.ops.aten


def _reduction_size(func, args) -> int:
    """Length of the summed dimension of one output element of a synaptic op."""
    if func is aten.convolution.default:
        weight = args[1]
        return weight.shape[1] * prod(weight.shape[2:])
    left = args[1] if func in (aten.addmm.default, aten.baddbmm.default) else args[0]
    return left.shape[-1]


class DenseSpikeOpCounter(BaseCounter):
    """Synaptic ops with a binary operand, counted as dense (every input a spike).

    Complements spikingjelly's `MACCounter`, which counts the same ops when no operand is
    binary; with both, every conv/linear/matmul is counted once.
    """

    def __init__(self) -> None:
        super().__init__()
        for func in (aten.mm.default, aten.addmm.default, aten.bmm.default,
                     aten.baddbmm.default, aten.convolution.default):  # fmt: skip
            self.rules[func] = self._rule(func)

    @staticmethod
    def _rule(func):
        def count(args, kwargs, out) -> int:
            operands = args[1:3] if func in (aten.addmm.default, aten.baddbmm.default) else args[:2]
            if any(is_binary_tensor(t) for t in operands):
                return out.numel() * _reduction_size(func, args)
            return 0

        return count


def synaptic_mac_counter() -> MACCounter:
    """spikingjelly's `MACCounter` restricted to synaptic ops (its BatchNorm rule removed)."""
    counter = MACCounter()
    counter.rules.pop(aten.native_batch_norm.default, None)
    return counter


def example_input(model: nn.Module, batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """A random static batch ``[B, C, H, W]`` of the model's input size (uniform in [0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, model.in_channels, model.img_size, model.img_size, generator=gen)


def count_parameters(model: nn.Module, *, used_only: bool = False) -> int:
    """Number of parameters; ``used_only`` leaves out those a model lists in
    ``unused_parameters()`` (reference leftovers such as never-called LayerNorms)."""
    total = sum(p.numel() for p in model.parameters())
    if used_only and hasattr(model, "unused_parameters"):
        total -= sum(p.numel() for _, p in model.unused_parameters())
    return total


def measure_cost(
    model: nn.Module, batch: torch.Tensor, *, bn_batch_stats: bool = False
) -> pd.DataFrame:
    """Neurons, firing rates and operation counts of ``model`` on ``batch``.

    Args:
        model: A `SpikingClassifier` (anything with ``downsample_sites()``); run in eval mode.
        batch: Model input, ``[B, C, H, W]`` or ``[B, T, C, H, W]``.
        bn_batch_stats: Normalise with the batch's statistics (train-mode BatchNorm; this also
            updates the running statistics). Use it for untrained models, whose running
            statistics leave almost every neuron silent.

    Returns:
        One row per site (``scope`` = its module name), then ``"all sites"`` and ``"model"``;
        columns ``scope, lif_neurons, firing_rate, macs, acs_dense, sops, energy_mj`` (see the
        module docstring).
    """
    sites = list(model.downsample_sites())
    neurons: dict[str, list[float]] = {}

    def hook(name):
        def record(module, inputs, output) -> None:
            per_step = prod(output.shape[2:])  # output [T, B, ...]
            neurons[name] = [per_step, float(output.float().mean())]

        return record

    handles = [
        m.register_forward_hook(hook(n)) for n, m in model.named_modules() if is_spiking_neuron(m)
    ]
    macs, dense, sops = synaptic_mac_counter(), DenseSpikeOpCounter(), SynOpCounter()
    was_training = model.training
    try:
        model.train(bn_batch_stats)
        functional.reset_net(model)
        with torch.no_grad(), DispatchCounterMode([macs, dense, sops]):
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
        functional.reset_net(model)
        model.train(was_training)

    n_images = batch.shape[0]
    prefix = type(model).__name__

    def ops(counter: BaseCounter, scope: str) -> float:
        key = "Global" if scope == "" else f"{prefix}.{scope}"
        return sum(counter.get_counts().get(key, {}).values()) / n_images

    def row(scope: str, names: Iterable[str], op_scopes: Iterable[str]) -> dict:
        names, op_scopes = list(names), list(op_scopes)
        count = sum(neurons[n][0] for n in names)
        spikes = sum(neurons[n][0] * neurons[n][1] for n in names)
        mac = sum(ops(macs, s) for s in op_scopes)
        sop = sum(ops(sops, s) for s in op_scopes)
        return {
            "scope": scope,
            "lif_neurons": int(count),
            "firing_rate": spikes / count if count else float("nan"),
            "macs": mac,
            "acs_dense": sum(ops(dense, s) for s in op_scopes),
            "sops": sop,
            "energy_mj": (E_MAC_PJ * mac + E_AC_PJ * sop) * 1e-9,
        }

    site_neurons = {s: [n for n in neurons if n.startswith(f"{s}.")] for s in sites}
    rows = [row(s, site_neurons[s], [s]) for s in sites]
    rows.append(row("all sites", [n for s in sites for n in site_neurons[s]], sites))
    rows.append(row("model", neurons, [""]))
    return pd.DataFrame(rows)


def cost_report(
    model_name: str,
    *,
    downsamples: Iterable[str] | None = None,
    batch: torch.Tensor | None = None,
    batch_size: int = 1,
    seed: int = 0,
    bn_batch_stats: bool = False,
    **model_kwargs: object,
) -> pd.DataFrame:
    """Cost table of a registered backbone for each downsampling variant.

    Every variant is built from the same seed, so all weights are equal (the variants share
    parameter shapes and creation order) and only the site order differs.

    Args:
        model_name: One of `gradprobe.models.list_models()`.
        downsamples: Variants to compare; all registered ones by default.
        batch: Input batch; a random ``[batch_size, C, H, W]`` one if ``None``.
        batch_size: Size of the random batch.
        seed: Seed for weights and the random batch.
        bn_batch_stats: See `measure_cost`.
        **model_kwargs: Passed to `create_model` (``num_classes``, ``T``, ``img_size``...).

    Returns:
        `measure_cost`'s rows for each variant, with columns ``model`` and ``downsample`` in
        front and ``lif_ratio`` (LIF neurons over the ``lif_maxpool`` row of the same scope).

    Example:
        >>> df = cost_report("spikformer_4_384_cifar", T=1, embed_dim=32, num_heads=4, depth=1)
        >>> ratios = df[df.scope == "all sites"].set_index("downsample")["lif_ratio"]
        >>> float(ratios["maxpool_lif"])
        0.25
    """
    frames = []
    for downsample in downsamples or list_downsamples():
        torch.manual_seed(seed)
        model = create_model(model_name, downsample=downsample, **model_kwargs)
        x = batch if batch is not None else example_input(model, batch_size, seed)
        frame = measure_cost(model, x, bn_batch_stats=bn_batch_stats)
        frame.insert(0, "downsample", downsample)
        frame.insert(0, "model", model_name)
        frames.append(frame)
    report = pd.concat(frames, ignore_index=True)
    baseline = report[report.downsample == BASELINE].set_index("scope")["lif_neurons"]
    report.insert(4, "lif_ratio", report.lif_neurons / report.scope.map(baseline))
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m gradprobe.cost``; a mistake (unknown model or variant, a bad size) is one line
    on stderr and exit status 2."""
    from gradprobe.cli import OneLineParser, positive_int

    parser = OneLineParser(
        prog="python -m gradprobe.cost",
        description="LIF neurons per downsampling site, synaptic ops and energy, per variant.",
    )
    parser.add_argument("--model", required=True, help="registered backbone name")
    parser.add_argument("--downsample", nargs="*", help="variants (default: all)")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=2)
    parser.add_argument(
        "--T", type=positive_int("--T"), default=None, help="time steps (default: the model's)"
    )
    parser.add_argument("--num-classes", type=positive_int("--num-classes"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in (("T", args.T), ("num_classes", args.num_classes)) if v is not None}
    try:
        MODELS.get(args.model)
        for variant in args.downsample or ():
            DOWNSAMPLES.get(variant)
        with torch.device("meta"):  # the model's own checks, before any real work
            create_model(args.model, downsample=(args.downsample or [BASELINE])[0], **kwargs)
    except UnknownNameError as err:
        parser.error(str(err))
    except (TypeError, ValueError) as err:
        parser.error(f"cannot build model {args.model!r}: {err}")
    # untrained weights on random images: batch statistics give non-trivial firing
    report = cost_report(
        args.model,
        downsamples=args.downsample,
        batch_size=args.batch_size,
        seed=args.seed,
        bn_batch_stats=True,
        **kwargs,
    )
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(report.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    sites = report[report.scope == "all sites"].set_index("downsample")
    if BASELINE in sites.index:
        for variant, ratio in sites["lif_ratio"].items():
            print(f"downsampling-site LIF neurons, {variant} / {BASELINE}: {ratio:.4f}")
    print(
        "untrained weights, random images, BatchNorm on batch statistics: firing rates, sops and "
        "energy are illustrative; use measure_cost on a trained model and real data"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
