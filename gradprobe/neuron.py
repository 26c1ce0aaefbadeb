"""Spiking neurons with the reference defaults, built on spikingjelly 2.0's ``activation_based``.

spikingjelly 2.0 picks the LIF kernel by device (a vectorised CPU path, CUDA or Triton when
importable), so nothing here asks for CuPy. How a step computes the same neurons faster, or
exactly as the reference implementations' per-timestep loop does, is not a neuron setting: a
harness chooses it with its step mode (``trainer.mode``), which swaps the kernel in from outside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from spikingjelly.activation_based import neuron, surrogate
from torch import nn

SURROGATES = {"sigmoid": surrogate.Sigmoid, "atan": surrogate.ATan}
KINDS = ("lif", "plif")


@dataclass(frozen=True)
class NeuronConfig:
    """How every spiking neuron of a model is built.

    Defaults are the reference implementations' (spec section 1): LIF with tau=2, threshold 1,
    hard reset to 0, ``detach_reset=True``, Sigmoid surrogate with alpha=4.

    Args:
        kind: ``"lif"`` or ``"plif"`` (parametric LIF with a learnable tau, used by Spikeformer).
        tau: Membrane time constant (initial value for PLIF). Must be > 1.
        v_threshold: Firing threshold.
        v_reset: Hard-reset potential; ``None`` selects soft reset (subtract threshold).
        detach_reset: Detach the spike in the reset path.
        decay_input: Decay the input as well as the membrane, eq. (3).
        surrogate: Surrogate-gradient name: one of ``SURROGATES``.
        alpha: Surrogate sharpness.
    """

    kind: Literal["lif", "plif"] = "lif"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    detach_reset: bool = True
    decay_input: bool = True
    surrogate: str = "sigmoid"
    alpha: float = 4.0

    def __post_init__(self) -> None:
        _check_choice("neuron kind", self.kind, KINDS)
        _check_choice("surrogate", self.surrogate, tuple(SURROGATES))
        if not float(self.tau) > 1.0:
            raise ValueError(f"tau must be > 1, got {self.tau!r}")

    def replace(self, **changes: object) -> NeuronConfig:
        """A copy with some fields changed (e.g. the attention LIF's threshold 0.5)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choices: {', '.join(choices)}")


def make_neuron(cfg: NeuronConfig | None = None, **overrides: object) -> nn.Module:
    """Build one multi-step spiking neuron (``[T, B, ...] → [T, B, ...]``).

    Args:
        cfg: Neuron settings; defaults to the reference LIF.
        **overrides: Fields of `NeuronConfig` to change for this neuron only.

    Returns:
        A spikingjelly neuron in multi-step mode. Reset it with
        ``spikingjelly.activation_based.functional.reset_net``.

    Example:
        >>> lif = make_neuron(NeuronConfig(), v_threshold=0.5)
        >>> lif(torch.ones(4, 1, 3)).shape
        torch.Size([4, 1, 3])
    """
    cfg = (cfg or NeuronConfig()).replace(**overrides) if overrides else (cfg or NeuronConfig())
    common = dict(
        v_threshold=float(cfg.v_threshold),
        v_reset=None if cfg.v_reset is None else float(cfg.v_reset),
        surrogate_function=SURROGATES[cfg.surrogate](alpha=float(cfg.alpha)),
        detach_reset=cfg.detach_reset,
        decay_input=cfg.decay_input,
        step_mode="m",
    )
    if cfg.kind == "plif":
        return neuron.ParametricLIFNode(init_tau=float(cfg.tau), **common)
    return neuron.LIFNode(tau=float(cfg.tau), **common)


def is_spiking_neuron(module: nn.Module) -> bool:
    """True for any spikingjelly neuron (the probe uses this to find sites in foreign models)."""
    return isinstance(module, neuron.BaseNode)
