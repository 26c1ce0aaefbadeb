"""Display labels and display order of the downsampling variants: one table, standard library only.

The registry (`gradprobe.downsample`) says what a variant computes; this module says how it is
named in figures and tables and in which order it is shown. It imports nothing but the standard
library, so that ``reports`` (which reads files, never models) and plotting code share it
without importing torch.

The built-in variants carry the paper's names and come first, in the paper's Table 1 row order.
A variant registered with ``register_downsample(name, label=...)`` adds its label here at
registration; any other name is shown as is, after the built-ins, sorted by name (so the order
does not depend on which builders a process happened to import).

Example:
    >>> variant_label("maxpool_lif")
    'ConvBN-MaxPool-LIF'
    >>> sort_variants(["strided_conv", "my_variant", "maxpool_lif", "lif_maxpool"])
    ['lif_maxpool', 'maxpool_lif', 'strided_conv', 'my_variant']
"""

from __future__ import annotations

from collections.abc import Iterable

# Registry name -> label. The literal holds the built-in variants in display order; registered
# variants are appended by `add_label`.
LABELS: dict[str, str] = {
    "lif_maxpool": "ConvBN-LIF-MaxPool",
    "maxpool_lif": "ConvBN-MaxPool-LIF",
    "avgpool_lif": "ConvBN-AvgPool-LIF",
    "strided_conv": "ConvBN(stride=2)-LIF",
}

BUILTIN_ORDER: tuple[str, ...] = tuple(LABELS)


def variant_label(name: str) -> str:
    """The display label of a variant: the paper's name, a registered label, or ``name``.

    Example:
        >>> variant_label("lif_maxpool"), variant_label("unregistered")
        ('ConvBN-LIF-MaxPool', 'unregistered')
    """
    return LABELS.get(name, name)


def add_label(name: str, label: str) -> None:
    """Record the display label of variant ``name`` (done by ``register_downsample``).

    Raises:
        ValueError: If ``name`` already has another label.
    """
    known = LABELS.setdefault(name, label)
    if known != label:
        raise ValueError(f"downsampling variant {name!r} is already labelled {known!r}")


def variant_key(name: str) -> tuple[int, str]:
    """Sort key of a variant: built-ins by display position, then other names by name."""
    try:
        return BUILTIN_ORDER.index(name), name
    except ValueError:
        return len(BUILTIN_ORDER), name


def sort_variants(names: Iterable[str]) -> list[str]:
    """Distinct ``names`` in display order (see `variant_key`)."""
    return sorted(set(names), key=variant_key)
