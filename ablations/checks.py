"""Reject every bad choice before training starts, with one line naming the value and the choices."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from ablations.data import list_datasets
from ablations.losses import LOSSES
from gradprobe.downsample import PoolSpec, list_downsamples
from gradprobe.fast import MODES
from gradprobe.models import create_model, list_models
from gradprobe.neuron import NeuronConfig
from gradprobe.registry import UnknownNameError

PROBES = ("none", "landing")
AMP = ("auto", "bf16", "fp16", "fp32")
CUDA_GRAPH = ("auto", "on", "off")
PROGRESS = ("auto", "bar", "log", "none")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message is one line for the user."""


def _choice(what: str, value: object, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choices: {', '.join(map(str, choices))}")


def _flag(what: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be true or false, got {value!r}")


def _positive(what: str, value: object, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


def neuron_config(cfg: DictConfig) -> tuple[NeuronConfig | None, float | None]:
    """``(neuron, tau)`` for `create_model` from the ``neuron`` group.

    ``neuron`` is ``None`` when every field but tau is the reference default, so that the
    backbone keeps its own reference tau (Spikingformer's DVS models differ) unless ``tau`` is set.
    """
    fields = {k: v for k, v in cfg.items() if k != "tau"}
    tau = None if cfg.tau is None else float(cfg.tau)
    try:
        neuron = NeuronConfig(**fields, tau=tau if tau is not None else NeuronConfig.tau)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad neuron settings: {err}") from None
    if NeuronConfig(**fields) == NeuronConfig():
        return None, tau
    return neuron, tau


def pool_spec(cfg: DictConfig) -> PoolSpec:
    """The reduction geometry of the ``downsample`` group."""
    try:
        return PoolSpec(
            kernel_size=int(cfg.kernel_size),
            stride=int(cfg.stride),
            padding=int(cfg.padding),
            count_include_pad=bool(cfg.count_include_pad),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None


def model_kwargs(cfg: DictConfig) -> dict:
    """Keyword arguments of `create_model` for this config (shared by the check and the build)."""
    neuron, tau = neuron_config(cfg.neuron)
    kwargs = dict(cfg.model.kwargs or {})
    kwargs.update(
        downsample=cfg.downsample.name,
        num_classes=int(cfg.dataset.num_classes),
        in_channels=int(cfg.dataset.in_channels),
        img_size=int(cfg.dataset.img_size),
        neuron=neuron,
        pool=pool_spec(cfg.downsample),
    )
    if tau is not None:
        kwargs["tau"] = tau
    if cfg.model.T is not None:
        kwargs["T"] = int(cfg.model.T)
    return kwargs


def check_config(cfg: DictConfig) -> int:
    """Validate a composed config without touching data or training.

    Builds the model on the meta device (no memory, no time) so that the backbone itself
    rejects what it cannot take, e.g. an image size its downsampling sites cannot divide.

    Returns:
        The model's T (time steps, also the frames per event sample).

    Raises:
        ConfigError: The first problem found, in one line.
    """
    _choice("model", cfg.model.name, list_models())
    _choice("downsampling variant", cfg.downsample.name, list_downsamples())
    _choice("dataset loader", cfg.dataset.loader, list_datasets())
    _choice("loss", cfg.loss.name, LOSSES.names())
    _choice("probe", cfg.probe.name, PROBES)
    _choice("trainer.mode", cfg.trainer.mode, MODES)
    _choice("trainer.amp", cfg.trainer.amp, AMP)
    _choice("trainer.cuda_graph", cfg.trainer.get("cuda_graph", "auto"), CUDA_GRAPH)
    _flag("trainer.exact", cfg.trainer.get("exact", False))
    _flag("trainer.retain_memory", cfg.trainer.get("retain_memory", False))
    _choice("trainer.progress", cfg.trainer.progress, PROGRESS)
    _positive("model.T", cfg.model.T, allow_none=True)
    _positive("trainer.batch_size", cfg.trainer.batch_size)
    _positive("trainer.eval_batch_size", cfg.trainer.eval_batch_size)
    _positive("trainer.epochs", cfg.trainer.epochs)
    _positive("trainer.max_steps_per_epoch", cfg.trainer.max_steps_per_epoch, allow_none=True)
    _positive("trainer.cpu_threads", cfg.trainer.cpu_threads, allow_none=True)
    _positive("trainer.lock_lease_s", cfg.trainer.lock_lease_s)
    if cfg.probe.name == "landing":
        _positive("probe.every", cfg.probe.every)
    device = str(cfg.trainer.device)
    if device != "auto":
        try:
            torch.device(device)
        except RuntimeError:
            raise ConfigError(
                f"unknown trainer.device {device!r}; choices: auto, cpu, cuda, cuda:<n>"
            ) from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={device!r} but CUDA is not available; choices: auto, cpu"
            )
    mix = cfg.loss.mixup
    if (mix.mixup_alpha > 0 or mix.cutmix_alpha > 0) and cfg.trainer.batch_size % 2:
        raise ConfigError(
            f"mixup/cutmix needs an even trainer.batch_size, got {cfg.trainer.batch_size}"
        )
    try:
        with torch.device("meta"):
            model = create_model(cfg.model.name, **model_kwargs(cfg))
    except UnknownNameError as err:
        raise ConfigError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cfg.model.name} cannot be built from this config: {err}") from None
    return int(model.T)
