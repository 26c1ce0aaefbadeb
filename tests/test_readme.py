"""The README's commands and examples are the ones that work."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert ci_lines == [test_command]


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_quickstart_command_is_the_documented_experiment():
    assert "python -m ablations.train -m experiment=quickstart" in README
    assert (ROOT / "ablations" / "conf" / "experiment" / "quickstart.yaml").is_file()


def test_readme_states_the_guarantee_the_quickstart_table_carries():
    """The sentence, and what makes it true: the quickstart is exact, and the test that caps the
    instruction set exists under the name the README gives."""
    assert "These digits hold on every x86-64 CPU with AVX2 and FMA" in README
    assert "`tests/test_portable.py` gets identical run documents" in README
    experiment = (ROOT / "ablations" / "conf" / "experiment" / "quickstart.yaml").read_text()
    assert "override /speed: exact" in experiment
    tests = (ROOT / "tests" / "test_portable.py").read_text()
    assert "def test_the_whole_quickstart_is_identical_whatever_instruction_set" in tests


@pytest.mark.slow
def test_readme_quickstart_table_is_what_the_quickstart_produces(tmp_path):
    """Rerun the README's main job and compare its Markdown Table 1 with the README's."""
    env = {**os.environ, "GRADPROBE_SWEEPS": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-m", "ablations.train", "-m", "experiment=quickstart"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "reports",
            "build",
            "--results",
            str(tmp_path / "quickstart"),
            "--out",
            str(tmp_path / "report"),
            "--no-figures",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    produced = (tmp_path / "report" / "table1_other.md").read_text()
    rows = [line for line in produced.splitlines() if line.startswith("| ConvBN")]
    assert len(rows) == 4
    for row in rows:
        assert row in README
