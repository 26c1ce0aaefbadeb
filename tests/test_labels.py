"""The one table of variant labels and order: standard library only, built-ins first."""

import subprocess
import sys
from pathlib import Path

import pytest

from gradprobe import labels
from gradprobe.labels import BUILTIN_ORDER, add_label, sort_variants, variant_key, variant_label

ROOT = Path(__file__).resolve().parents[1]
PAPER = {
    "lif_maxpool": "ConvBN-LIF-MaxPool",
    "maxpool_lif": "ConvBN-MaxPool-LIF",
    "avgpool_lif": "ConvBN-AvgPool-LIF",
    "strided_conv": "ConvBN(stride=2)-LIF",
}


def test_builtins_carry_the_papers_names_in_its_row_order():
    assert list(BUILTIN_ORDER) == list(PAPER)
    assert {v: variant_label(v) for v in BUILTIN_ORDER} == PAPER


def test_other_names_follow_the_builtins_sorted_by_name():
    names = ["zeta", "strided_conv", "alpha", "lif_maxpool", "zeta", "maxpool_lif"]
    assert sort_variants(names) == ["lif_maxpool", "maxpool_lif", "strided_conv", "alpha", "zeta"]
    assert sorted(["alpha", "avgpool_lif"], key=variant_key) == ["avgpool_lif", "alpha"]
    assert variant_label("alpha") == "alpha"


def test_a_name_keeps_one_label(monkeypatch):
    monkeypatch.setattr(labels, "LABELS", dict(labels.LABELS))
    add_label("my_pool", "ConvBN-MyPool-LIF")
    add_label("my_pool", "ConvBN-MyPool-LIF")  # the same label again: nothing changes
    assert variant_label("my_pool") == "ConvBN-MyPool-LIF"
    with pytest.raises(ValueError, match="'my_pool' is already labelled 'ConvBN-MyPool-LIF'"):
        add_label("my_pool", "other")
    with pytest.raises(ValueError, match="already labelled 'ConvBN-LIF-MaxPool'"):
        add_label("lif_maxpool", "other")
    assert sort_variants(["my_pool", "strided_conv"]) == ["strided_conv", "my_pool"]


def test_the_table_imports_only_the_standard_library():
    code = (
        "import sys; before = set(sys.modules); import gradprobe.labels; "
        "new = {m.partition('.')[0] for m in set(sys.modules) - before}; "
        "third = new - set(sys.stdlib_module_names); assert third == {'gradprobe'}, third"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
