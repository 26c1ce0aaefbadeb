"""Reject every bad choice before anything is built, with one line naming the key, the value and
what is allowed.

`check_config` runs on a composed config before any model, kernel or data loader exists (in
`ablations.preflight`, before a command launches its jobs, and again in each job). It checks, in
this order: the registered names; every value against `ablations.rules.RULES` (types, signs,
ranges); the keys of
the nodes passed on whole (`ablations.keys`); the optimiser and scheduler on a one-element
parameter; the dataset's presence on disk; and the backbone, built on the meta device.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ablations import keys
from ablations.data import check_dataset, list_datasets
from ablations.losses import LOSSES
from ablations.rules import RULES
from gradprobe.downsample import PoolSpec, list_downsamples
from gradprobe.fast import MODES
from gradprobe.models import create_model, list_models
from gradprobe.neuron import NeuronConfig
from gradprobe.registry import UnknownNameError

PROBES = ("none", "landing")
AMP = ("auto", "bf16", "fp16", "fp32")
CUDA_GRAPH = ("auto", "on", "off")
PROGRESS = ("auto", "bar", "log", "none")
MIXUP_MODES = ("batch", "pair", "elem")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message is one line for the user."""


_ABSENT = object()


def _choice(what: str, value: object, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choices: {', '.join(map(str, choices))}")


def check_values(cfg: DictConfig) -> None:
    """Every key of `RULES` that ``cfg`` holds must hold an allowed value.

    Raises:
        ConfigError: ``"<key> must be <what is allowed>, got <value>"`` for the first bad one.
    """
    for key, allowed in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT)
        except OmegaConfBaseException as err:  # e.g. an interpolation to a key that is not there
            raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
        if value is _ABSENT:
            continue
        problem = allowed.problem(value)
        if problem:
            shown = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
            raise ConfigError(f"{key} {problem}, got {shown!r}")


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


def check_targets(cfg: DictConfig) -> None:
    """The ``optim`` and ``sched`` keys are arguments of their targets, and the two build on a
    one-element parameter (the optimiser checks its own values, e.g. betas)."""
    for group in ("optim", "sched"):
        problem = keys.unknown_target_key(cfg, group)
        if problem:
            raise ConfigError(problem)
    what = f"optim ({cfg.optim._target_})"
    muted = logging.root.manager.disable
    logging.disable(logging.WARNING)  # e.g. timm's note on a one-epoch cosine, said by the run
    try:
        optimizer = keys.instantiate_target(cfg.optim, params=[torch.nn.Parameter(torch.zeros(1))])
        what = f"sched ({cfg.sched._target_})"
        keys.instantiate_target(cfg.sched, optimizer=optimizer)
    except Exception as err:
        cause = err.__cause__ or err  # Hydra wraps the target's own error
        raise ConfigError(f"{what} rejects these settings: {str(cause).splitlines()[0]}") from None
    finally:
        logging.disable(muted)


def check_device(device: str) -> None:
    """``trainer.device`` names a device this machine has."""
    if device == "auto":
        return
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


def check_config(cfg: DictConfig, here: bool = True) -> int:
    """Validate a composed config without building anything or reading any data.

    Builds the model on the meta device (no memory, no time) so that the backbone itself
    rejects what it cannot take, e.g. an image size its downsampling sites cannot divide.

    Args:
        cfg: The composed config.
        here: The run trains on this machine: also check that its dataset is on disk (or will be
            downloaded) and that its device exists. A Slurm job is checked there.

    Returns:
        The model's T (time steps, also the frames per event sample).

    Raises:
        ConfigError: The first problem found, in one line.
        gradprobe.data.DataNotFoundError: The dataset is not where the config says.
    """
    _choice("model", cfg.model.name, list_models())
    _choice("downsampling variant", cfg.downsample.name, list_downsamples())
    _choice("dataset loader", cfg.dataset.loader, list_datasets())
    _choice("loss", cfg.loss.name, LOSSES.names())
    _choice("probe", cfg.probe.name, PROBES)
    _choice("trainer.mode", cfg.trainer.mode, MODES)
    _choice("trainer.amp", cfg.trainer.amp, AMP)
    _choice("trainer.cuda_graph", cfg.trainer.get("cuda_graph", "auto"), CUDA_GRAPH)
    _choice("trainer.progress", cfg.trainer.progress, PROGRESS)
    _choice("loss.mixup.mode", cfg.loss.mixup.mode, MIXUP_MODES)
    check_values(cfg)
    trainer, dataset = cfg.trainer, cfg.dataset
    limit = dataset.get("limit_train")
    if limit is not None and limit < trainer.batch_size:
        raise ConfigError(
            f"dataset.limit_train={limit} is smaller than trainer.batch_size="
            f"{trainer.batch_size}: an epoch would have no full batch; choices: a limit of at "
            f"least {trainer.batch_size}, or a smaller batch"
        )
    mix = cfg.loss.mixup
    if (mix.mixup_alpha > 0 or mix.cutmix_alpha > 0) and trainer.batch_size % 2:
        raise ConfigError(
            f"mixup/cutmix needs an even trainer.batch_size, got {trainer.batch_size}"
        )
    problem = keys.bad_model_kwarg(cfg)
    if problem:
        raise ConfigError(problem)
    check_targets(cfg)
    if here:
        check_device(str(trainer.device))
        check_dataset(dataset)
    try:
        with torch.device("meta"):
            model = create_model(cfg.model.name, **model_kwargs(cfg))
    except UnknownNameError as err:
        raise ConfigError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cfg.model.name} cannot be built from this config: {err}") from None
    return int(model.T)
