"""`gradprobe.fast` is a room of its own: nothing else in `gradprobe` imports it.

The models say what a network computes; the fast path is installed on them from outside
(`gradprobe.fast.swap`). An import from the library into the fast package would let speed
branches creep back into the models, so every module outside ``gradprobe/fast/`` is checked.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import gradprobe

PACKAGE = Path(gradprobe.__file__).resolve().parent
FAST = PACKAGE / "fast"
#: A module name in a string, as ``importlib.import_module`` would take it.
NAME = re.compile(r"gradprobe\.fast(\.\w+)*")


def fast_imports(source: str, path: Path) -> list[str]:
    """``line: statement`` of each import of `gradprobe.fast` (or of a module in it) in the
    ``source`` of the file ``path``: import statements (relative ones resolved against its
    package) and module names in strings (``importlib.import_module("gradprobe.fast")``)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative
            base = path.parent.relative_to(PACKAGE.parent).parts
            base = base[: len(base) - node.level + 1]
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if NAME.fullmatch(node.value) else []
        else:
            continue
        if any(name == "gradprobe.fast" or name.startswith("gradprobe.fast.") for name in names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_outside_the_fast_package_imports_it() -> None:
    files = [p for p in PACKAGE.rglob("*.py") if FAST not in p.parents]
    assert len(files) > 10 and PACKAGE / "models" / "layers.py" in files
    offenders = {}
    for path in files:
        found = fast_imports(path.read_text(), path)
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert not offenders, offenders


def test_the_check_finds_every_form_of_import() -> None:
    source = (
        "import gradprobe.fast\n"
        "from gradprobe import fast\n"
        "from gradprobe.fast.plan import configure\n"
        "from ..fast import swap\n"
        "from gradprobe import models\n"
        "import gradprobe.faster\n"
        "from . import layers\n"
        "importlib.import_module('gradprobe.fast.plan')\n"
        "print('a docstring may name gradprobe.fast')\n"
    )
    found = fast_imports(source, PACKAGE / "models" / "sample.py")
    assert [line.split(":")[0] for line in found] == ["1", "2", "3", "4", "8"]


def test_the_library_runs_without_loading_the_fast_package() -> None:
    """At run time too: building, running and probing a model loads no module of it, and
    ``from gradprobe import fast`` alone loads none of its submodules (names load on use)."""
    code = (
        "import sys, torch, gradprobe; from gradprobe.models import create_model; "
        "from gradprobe.probe import attach_probe; "
        "model = create_model('sps_tokenizer_cifar', T=2); "
        "probe = attach_probe(model); model(torch.rand(2, 3, 32, 32)).sum().backward(); "
        "probe.remove(); "
        "loaded = [m for m in sys.modules if m.startswith('gradprobe.fast')]; "
        "assert not loaded, loaded; "
        "from gradprobe import fast; assert fast.MODES == ('fast', 'reference'); "
        "loaded = [m for m in sys.modules if m.startswith('gradprobe.fast.')]; "
        "assert not loaded, loaded; "
        "assert fast.configure is fast.plan.configure and fast.rows_bn.available() in (True, False)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
