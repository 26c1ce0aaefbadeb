"""Portable CPU numerics: exact runs give the same documents whatever instruction set the
libraries may use (capped at AVX2, at AVX-512, uncapped), and the environment records the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradprobe import portable
from reports.diff import diff_stores

ROOT = Path(__file__).resolve().parents[1]
#: How a test makes one machine look like a smaller one: every library's own cap.
CAPS = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    },
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
    },
    "uncapped": {},
}
HAS_AVX512 = "avx512f" in portable.cpu_info()["flags"]
needs_portable = pytest.mark.skipif(
    portable.supported() is not None, reason=str(portable.supported())
)


def clean_env(cap: str, cache: Path | None = None) -> dict[str, str]:
    """This process's environment without any ISA setting, plus the cap. ``cache``: a private
    TorchInductor cache, for a process that compiles natively under a cap (kernels built for one
    vector width must not be loaded under another); portable processes keep their own anyway."""
    env = {k: v for k, v in os.environ.items() if k not in portable.ISA_VARIABLES}
    env.update(CAPS[cap])
    if cache is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
    return env


def sweep(tmp_path: Path, name: str, cap: str, *overrides: str, cache: bool = False) -> Path:
    """Run the quickstart in a subprocess with the instruction sets capped; returns the sweep
    dir. ``cache``: compile into a private cache of this sweep's."""
    out = tmp_path / name
    command = [sys.executable, "-m", "ablations.train", "-m", "experiment=quickstart"]
    command += [f"paths.sweeps={out}", "trainer.progress=none", *overrides]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=clean_env(cap, tmp_path / f"inductor-{name}" if cache else None),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "quickstart"


SHORT = ("downsample=lif_maxpool", "trainer.epochs=2", "trainer.max_steps_per_epoch=6")


@needs_portable
def test_exact_runs_are_identical_whatever_instruction_set_the_libraries_may_use(tmp_path):
    stores = {cap: sweep(tmp_path, cap, cap, *SHORT) for cap in CAPS}
    for cap in ("avx2", "avx512"):
        result = diff_stores(stores["uncapped"], stores[cap])
        assert result.identical, "\n".join(result.lines())
    run = next((stores["avx2"]).glob("downsample=*/environment.json"))
    env = json.loads(run.read_text())["cpu_numerics"]
    assert env["portable_numerics"] is True
    assert env["aten_cpu_capability"] == "AVX2" and env["mkl_cbwr_branch"] == "COMPATIBLE"
    assert env["onednn_enabled"] is False and env["inductor_march"] == portable.MARCH
    assert env["cpu_model"] and "avx2" in env["cpu_flags"]
    assert env["isa_environment"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"  # the cap, recorded


@pytest.mark.skipif(not HAS_AVX512, reason="the caps only bite on a CPU with AVX-512")
def test_the_caps_change_the_numbers_of_a_run_that_is_not_exact(tmp_path):
    """The control: without portable numerics the same caps do change a run's numbers, so the
    test above can fail."""
    fast = (*SHORT, "speed=fast")
    native = sweep(tmp_path, "native", "uncapped", *fast, cache=True)
    capped = sweep(tmp_path, "capped", "avx2", *fast, cache=True)
    result = diff_stores(native, capped)
    assert not result.identical


@pytest.mark.slow
@needs_portable
def test_the_whole_quickstart_is_identical_whatever_instruction_set(tmp_path):
    stores = {cap: sweep(tmp_path, cap, cap) for cap in CAPS}
    for cap in ("avx2", "avx512"):
        result = diff_stores(stores["uncapped"], stores[cap])
        assert result.identical, "\n".join(result.lines())


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )


@needs_portable
def test_enter_first_thing_makes_a_process_portable(tmp_path):
    code = (
        "from gradprobe import portable; portable.enter(); import torch;"
        "print(portable.in_force(), torch.backends.cpu.get_cpu_capability(), portable.mkl_branch())"
    )
    done = run_python(code, clean_env("uncapped"))
    assert done.stdout.split() == ["True", "AVX2", "COMPATIBLE"], done.stderr


@needs_portable
def test_enter_after_computing_says_to_start_a_fresh_process(tmp_path):
    code = (
        "import torch; (torch.randn(64, 64) @ torch.randn(64, 64)).exp().sum()\n"
        "from gradprobe import portable\n"
        "try:\n    portable.enter()\nexcept portable.PortabilityError as e:\n    print(e)"
    )
    done = run_python(code, clean_env("uncapped"))
    message = done.stdout.strip()
    assert "computed before portable CPU numerics were set" in message, done.stderr
    assert "child_environment()" in message and "\n" not in message


def test_child_environment_pins_the_libraries_and_keeps_its_own_kernel_cache(tmp_path):
    env = portable.child_environment({"PATH": "/bin", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)})
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"] == "COMPATIBLE"
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "portable")
    assert portable.child_environment(env)["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "portable")
    assert env["PATH"] == "/bin"


def test_describe_names_the_cpu_and_the_libraries():
    info = portable.describe()
    assert set(info) >= {
        "cpu_model", "cpu_vendor", "cpu_flags", "aten_cpu_capability", "mkl_version",
        "mkl_cbwr_branch", "onednn_version", "onednn_enabled", "inductor_march",
        "isa_environment", "portable_numerics",
    }  # fmt: skip
    assert info["mkl_version"] and "Math Kernel Library" in info["mkl_version"]
    assert info["onednn_version"]
    assert info["portable_numerics"] is False  # the test process computes natively
