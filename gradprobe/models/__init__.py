"""Backbone registry: every backbone takes ``downsample: str`` and one factory builds them all.

Families live one per file in this package and register themselves with `register_model`;
``layers`` holds shared blocks and ``transformer`` the one builder behind Spikformer and
Spikingformer.
"""

from __future__ import annotations

from collections.abc import Callable

from gradprobe.models.base import SpikingClassifier
from gradprobe.registry import Registry

MODELS: Registry[Callable[..., SpikingClassifier]] = Registry("model")


def register_model(name: str | None = None) -> Callable:
    """Decorator registering a backbone factory ``fn(*, downsample, num_classes, T, neuron, **kw)``.

    A duplicate name raises ``ValueError``.
    """
    return MODELS.register(name)


def create_model(name: str, **kwargs: object) -> SpikingClassifier:
    """Build a registered backbone.

    Args:
        name: One of `list_models()`.
        **kwargs: ``downsample`` (a variant name), ``num_classes``, ``T``, ``neuron`` and any
            family-specific options; omitted ones take the reference defaults.

    Example:
        >>> model = create_model("spikformer_4_384_cifar", downsample="maxpool_lif", T=4)
    """
    return MODELS.get(name)(**kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a shell-style pattern, e.g. ``"spikingformer*"``."""
    return MODELS.names(pattern)


def _import_families() -> None:
    # Importing a family module registers its models; a family file that is missing is simply
    # not offered (families are added one file at a time).
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in {"base"}:
            importlib.import_module(f"{__name__}.{info.name}")


_import_families()

__all__ = ["MODELS", "SpikingClassifier", "create_model", "list_models", "register_model"]
