"""`gradprobe._lazy`: package names loaded on first use, then cached."""

from __future__ import annotations

import pytest

from gradprobe._lazy import lazy_attributes


def test_names_load_once_and_unknown_names_say_so() -> None:
    namespace: dict = {"__all__": ["sqrt"]}
    getattr_, dir_ = lazy_attributes("demo", namespace, {"sqrt": "math"}, ["path"])
    assert getattr_("sqrt")(9.0) == 3.0 and "sqrt" in namespace  # cached for later lookups
    assert dir_() == ["__all__", "sqrt"]
    with pytest.raises(ModuleNotFoundError, match="demo"):
        getattr_("path")  # a submodule of the package itself
    with pytest.raises(AttributeError, match="module 'demo' has no attribute 'nope'"):
        getattr_("nope")
