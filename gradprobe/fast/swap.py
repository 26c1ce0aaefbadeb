"""The one way the fast path and reference mode change a model: swap a module's class in place.

Every module class they install is a subclass of the model's own class that it runs in place of
(a `gradprobe.fast.FusedLIFNode` is a spikingjelly ``LIFNode``, a
`gradprobe.fast.layers.FastPointwiseBN` a `gradprobe.models.layers.PointwiseBN`), with the same
parameters, buffers and submodules, and declares so with `replaces`. `swap_modules` sets the
class of matching modules: parameters, state-dict keys and hooks stay as they were,
``print(model)`` names the class that runs (and its settings, in ``extra_repr``), and
`restore_modules` gives every module its own class back, so modes can be switched either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

#: Installed class → the class it runs in place of, and its per-instance settings.
_PLAIN: dict[type, type] = {}
_OPTIONS: dict[type, tuple[str, ...]] = {}


def replaces(plain: type, options: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator: the class runs in place of ``plain`` (its subclass) when swapped in.

    Args:
        plain: The model's own class that the decorated class replaces.
        options: Names of the per-instance settings `swap_modules` may set (class attributes
            of the decorated class give their defaults).

    Example:
        >>> @replaces(nn.ReLU)
        ... class LoudReLU(nn.ReLU):
        ...     pass
    """

    def register(cls: type) -> type:
        if not issubclass(cls, plain):
            raise TypeError(f"{cls.__name__} must subclass {plain.__name__}, the class it replaces")
        _PLAIN[cls] = plain
        _OPTIONS[cls] = tuple(options)
        return cls

    return register


def plain_class(cls: type) -> type:
    """The model's own class behind ``cls`` (``cls`` itself unless it was declared by `replaces`)."""
    while cls in _PLAIN:
        cls = _PLAIN[cls]
    return cls


def swap_class(module: nn.Module, target: type, **options: object) -> None:
    """Give ``module`` the class ``target`` (a `replaces` class or its own class) in place.

    The settings of the class it leaves are removed from the instance, then ``options`` are set
    on it; an option ``target`` does not declare is an error.
    """
    unknown = sorted(set(options) - set(_OPTIONS.get(target, ())))
    if unknown:
        raise TypeError(f"{target.__name__} has no option {', '.join(unknown)}")
    if plain_class(target) is not plain_class(type(module)):
        raise TypeError(f"{target.__name__} does not run in place of {type(module).__name__}")
    for name in _OPTIONS.get(type(module), ()):
        module.__dict__.pop(name, None)
    module.__class__ = target
    for name, value in options.items():
        setattr(module, name, value)


def swap_modules(model: nn.Module, mapping: Mapping[type, type], **options: object) -> int:
    """Swap the class of every module of ``model`` (itself included) whose own class is a key of
    ``mapping`` (exactly, subclasses do not match; whatever was swapped in before counts as its
    own class) for the mapped class, with ``options`` set on each (see `swap_class`).

    Args:
        model: Any module.
        mapping: Own class → class to run (the own class itself restores it).
        **options: Per-instance settings of the mapped classes.

    Returns:
        How many modules were swapped.

    Example:
        >>> from spikingjelly.activation_based import neuron
        >>> from gradprobe.fast import FusedLIFNode
        >>> model = nn.Sequential(neuron.LIFNode(step_mode="m"))
        >>> swap_modules(model, {neuron.LIFNode: FusedLIFNode}, compiled=False)
        1
        >>> type(model[0]).__name__
        'FusedLIFNode'
    """
    count = 0
    for module in model.modules():
        target = mapping.get(plain_class(type(module)))
        if target is not None:
            swap_class(module, target, **options)
            count += 1
    return count


def restore_modules(model: nn.Module) -> int:
    """Give every swapped module of ``model`` (itself included) its own class back, without the
    swapped class's settings; returns how many were restored."""
    count = 0
    for module in model.modules():
        plain = plain_class(type(module))
        if plain is not type(module):
            swap_class(module, plain)
            count += 1
    return count
