"""Config keys that nothing reads are errors, named with the nearest keys that exist.

Hydra's ``+key=value`` adds a key the config files do not define (``++key=value`` adds or
overrides it). The harness reads a fixed set of keys, so an added key is either a typo that would
be silently ignored (``+trainer.epoch=2``, ``+trainr.epochs=2``) or a key of one of the three
nodes the harness hands on whole, which are checked against what receives them:

- ``model.kwargs``: keyword arguments of the backbone's factory (`bad_model_kwarg` reads the
  factory's signature and, through its ``**kwargs``, the backbone class's);
- ``optim`` and ``sched``: arguments of their ``_target_`` (`unknown_target_key` reads its
  signature), e.g. ``+optim.fused=false``.

Why compare override keys rather than walk the composed config: a ``+`` override is by Hydra's own
rule a key the composed config did not have (``+`` on an existing key is Hydra's error), so the
override list alone says which keys were added, with no second composition. Only ``++`` can hit
an existing key; for those `check_added_keys` takes the config composed without the ``++``
overrides (`ablations.preflight` composes it with Hydra's config loader). A ``~key`` deletion of a
key the harness reads is refused the same way. Group overrides (``+experiment=...``) are not keys.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from collections.abc import Callable, Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from gradprobe.models import MODELS

#: The nodes passed on whole; their keys are checked against what receives them.
OPEN = ("model.kwargs", "optim", "sched")
#: Arguments of `create_model` that the harness sets from other keys (``model.kwargs`` may not).
SET_BY_HARNESS = {
    "downsample": "downsample=<variant>",
    "num_classes": "dataset.num_classes",
    "in_channels": "dataset.in_channels",
    "img_size": "dataset.img_size",
    "neuron": "the neuron group",
    "tau": "neuron.tau",
    "pool": "downsample.kernel_size / stride / padding",
    "T": "model.T",
}
#: Arguments of an optimiser or scheduler that the harness passes itself.
PASSED = ("params", "optimizer")
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_ABSENT = object()


def nearest(key: str, candidates: Iterable[str], n: int = 2) -> str:
    """``"nearest: a, b"`` for the candidates closest to ``key`` (difflib), or a pointer.

    Example:
        >>> nearest("trainer.epoch", ["trainer.epochs", "seed"])
        'nearest: trainer.epochs'
    """
    close = difflib.get_close_matches(key, list(candidates), n=n, cutoff=0.6)
    if close:
        return f"nearest: {', '.join(close)}"
    return "see the keys with: python -m ablations.train --cfg job"


def leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Dotted paths of every value of ``cfg`` (lists are values), without the ``hydra`` node."""
    keys = []
    for key in cfg:
        path = f"{prefix}{key}"
        if path == "hydra":
            continue
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none():
            keys += leaf_keys(node, f"{path}.")
        else:
            keys.append(path)
    return keys


def _open(key: str) -> bool:
    return any(key.startswith(f"{node}.") for node in OPEN)


def unknown_added_key(
    cfg: DictConfig,
    overrides: Iterable[str],
    groups: Iterable[str],
    base: Callable[[], DictConfig] | None = None,
) -> str | None:
    """The one-line error of the first override that adds (``+``, ``++``) or deletes (``~``) a
    key nothing reads, naming the nearest keys that exist; ``None`` when there is none.

    Args:
        cfg: The composed config of the job.
        overrides: The job's task overrides (``hydra.overrides.task``).
        groups: Config group names (``hydra.runtime.choices``): ``+group=option`` is not a key.
        base: Composes the config without the ``++`` overrides, to tell an added key from an
            overridden one; without it a ``++`` key is taken to exist.

    Example:
        >>> from omegaconf import OmegaConf
        >>> cfg = OmegaConf.create({"trainer": {"epochs": 8}, "seed": 0})
        >>> unknown_added_key(cfg, ["+trainer.epoch=2"], groups=["trainer"])
        "unknown config key 'trainer.epoch' (added with +); nearest: trainer.epochs"
    """
    groups = set(groups)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    keys = [o for o in parsed if o.key_or_group not in groups and not o.is_hydra_override()]
    before = None
    for override in keys:
        key = override.key_or_group
        if override.is_force_add():
            before = before if before is not None or base is None else base()
            if before is None or OmegaConf.select(before, key, default=_ABSENT) is not _ABSENT:
                continue
        elif not (override.is_add() or override.is_delete()):
            continue
        if _open(key):
            continue  # checked against the receiver by bad_model_kwarg / unknown_target_key
        if override.is_delete():
            return (
                f"config key {key!r} cannot be deleted (~{key}): the harness reads it; set a value"
            )
        added = {o.key_or_group for o in keys if o.is_add() or o.is_force_add()}
        known = [k for k in leaf_keys(before if before is not None else cfg) if k not in added]
        how = "+" if override.is_add() else "++"
        return f"unknown config key {key!r} (added with {how}); {nearest(key, known)}"
    return None


def parameters(fn: Callable) -> dict[str, inspect.Parameter] | None:
    """Named parameters of ``fn`` (a class: of its constructor); ``None`` when it takes any
    keyword (``**kwargs``), so that no name can be refused."""
    params = inspect.signature(fn).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n: p for n, p in params.items() if p.kind not in _VARIADIC}


def model_parameters(name: str) -> dict[str, inspect.Parameter] | None:
    """Keyword arguments the backbone ``name`` accepts: its factory's named ones and, when the
    factory passes ``**kwargs`` on to the class it returns, that class's constructor's."""
    factory = MODELS.get(name)
    params = dict(inspect.signature(factory).parameters)
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {n: p for n, p in params.items() if p.kind not in _VARIADIC}
    cls = typing.get_type_hints(factory).get("return")
    if not inspect.isclass(cls):
        return None
    received = parameters(cls)
    if received is None:
        return None
    named = {n: p for n, p in params.items() if p.kind not in _VARIADIC}
    return {**received, **named}


_KINDS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _wrong_type(value: object, param: inspect.Parameter) -> str | None:
    """What ``value`` should have been when the annotation of ``param`` rules it out."""
    annotation = param.annotation if isinstance(param.annotation, str) else ""
    first = annotation.split("|")[0].strip()
    if value is None and "None" in annotation:
        return None
    if first not in _KINDS:
        return None
    if isinstance(value, bool) != (first == "bool") or not isinstance(value, _KINDS[first]):
        return {"int": "an integer", "float": "a number", "bool": "true or false"}.get(
            first, "a string"
        )
    return None


def bad_model_kwarg(cfg: DictConfig) -> str | None:
    """The error of the first ``model.kwargs`` key that is not an argument of the backbone, not
    of its annotated type, or one the harness sets from another key (it would be overwritten
    silently); ``None`` when all are good."""
    name = str(cfg.model.name)
    kwargs = cfg.model.get("kwargs") or {}
    params = model_parameters(name)
    for key, value in kwargs.items():
        if key in SET_BY_HARNESS:
            return f"model.kwargs.{key} is set by the harness from {SET_BY_HARNESS[key]}; set that"
        if params is None:
            continue
        if key not in params:
            known = [f"model.kwargs.{k}" for k in params if k not in SET_BY_HARNESS]
            return (
                f"unknown config key 'model.kwargs.{key}' ({name} takes no {key!r}); "
                f"{nearest(f'model.kwargs.{key}', known, n=3)}"
            )
        plain = OmegaConf.to_object(value) if isinstance(value, (DictConfig, ListConfig)) else value
        wanted = _wrong_type(plain, params[key])
        if wanted:
            return f"model.kwargs.{key} must be {wanted}, got {plain!r}"
    return None


def unknown_target_key(cfg: DictConfig, group: str) -> str | None:
    """The error of the first key of the ``_target_`` node ``group`` (``optim``, ``sched``) that
    is not an argument of its target, or of a target that cannot be imported."""
    node = cfg[group]
    target = node.get("_target_")
    module, _, name = str(target).rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return (
            f"unknown {group}._target_ {target!r}: not an importable class; "
            f"choose {group}=<option> (python -m ablations.train --help lists them)"
        )
    params = parameters(fn)
    if params is None:
        return None
    for key in node:
        if key == "_target_" or (key in params and key not in PASSED):
            continue
        known = [f"{group}.{k}" for k in params if k not in PASSED]
        return (
            f"unknown config key '{group}.{key}' ({target} takes no {key!r}); "
            f"{nearest(f'{group}.{key}', known)}"
        )
    return None


def instantiate_target(node: DictConfig, **kwargs: object) -> object:
    """Build an optimiser or scheduler from its ``_target_`` node (the only ``_target_`` use)."""
    return instantiate(node, **kwargs, _convert_="all")
