"""The one-line error of a command whose extra is not installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gradprobe import extras


def test_missing_names_only_the_absent_modules() -> None:
    assert extras.missing("json", "gradprobe", "no_such_module_here") == ["no_such_module_here"]


def test_require_exits_with_the_extra_to_install() -> None:
    extras.require("harness", "json", command="demo")  # present: returns
    with pytest.raises(SystemExit) as exit_info:
        extras.require("harness", "json", "no_such_module_here", command="python -m demo")
    message = str(exit_info.value.code)
    assert message == (
        "python -m demo needs no_such_module_here (not installed): pip install 'gradprobe[harness]'"
    )


@pytest.mark.parametrize(
    ("module", "hidden", "extra"),
    [("ablations.train", "hydra", "harness"), ("reports", "scipy", "reports")],
)
def test_commands_without_their_extra_end_in_one_line(module: str, hidden: str, extra: str) -> None:
    # Hide the module as an uninstalled one looks to importlib: its spec lookup finds nothing.
    code = (
        "import importlib.util, runpy, sys; real = importlib.util.find_spec; "
        f"importlib.util.find_spec = lambda n, *a: None if n == {hidden!r} else real(n, *a); "
        f"sys.argv = ['x']; runpy.run_module({module!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"python -m {module.removesuffix('.__main__')} needs {hidden} (not installed): "
        f"pip install 'gradprobe[{extra}]'"
    ]


def test_the_library_installs_and_imports_without_hydra() -> None:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "hydra" not in base and "omegaconf" not in base and "ninja" not in base
    assert any(d.startswith("hydra-core") for d in project["optional-dependencies"]["harness"])
    # Every library module, the fast path included, imports without the harness's tools.
    code = (
        "import pkgutil, importlib, sys, gradprobe; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(gradprobe.__path__, "
        "'gradprobe.') if m.name != 'gradprobe.__main__']; "
        "bad = {'hydra', 'omegaconf', 'ninja'} & {n.split('.')[0] for n in sys.modules}; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
