"""`gradprobe.fast.allocator`: glibc keeps freed memory, so large tensors stop faulting their
pages in, where a process asks for it (never as a side effect of `gradprobe.fast.configure`).

The setting is process-wide and cannot be undone, so every check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradprobe.fast import allocator

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not allocator.available(), reason="needs glibc")


def _python(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


FAULTS = """
import json, resource, torch
from gradprobe.fast import allocator

def step():  # tensors of 64, 32 and 16 MiB, above glibc's largest mmap threshold of 32 MiB
    a, b = torch.ones(16 * 2**20), torch.ones(8 * 2**20)
    return float((a[: 8 * 2**20] + b)[0] + torch.ones(4 * 2**20)[0])

def faults_per_step():
    # once the heap has settled (after five steps), the fewest of three: the kernel's own
    # reclaim (e.g. DAMON on a VM) can take back an idle page now and then, whatever glibc does
    counts = []
    for _ in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(counts[5:])

default = faults_per_step()
retained = allocator.retain_freed_memory()
print(json.dumps({"default": default, "retained": retained, "after": faults_per_step()}))
"""


def test_retained_memory_is_reused_without_page_faults() -> None:
    result = _python(FAULTS)
    pages = (16 + 8 + 8 + 4) * 2**20 * 4 // 4096  # what the step writes
    assert result["retained"] is True
    assert result["default"] >= pages // 2  # glibc's default: fresh mappings every step
    assert result["after"] < pages // 20  # retained: freed blocks are reused


MODES = """
import json, torch
from gradprobe import fast
from gradprobe.fast import allocator
from gradprobe.models import create_model

model = create_model("sps_tokenizer_cifar", T=2)
plans = {}
plans["reference"] = fast.configure(model, "reference", device="cpu").retained_memory
plans["fast"] = fast.configure(model, "fast", device="cpu", compile_kernels=False).retained_memory
plans["before"] = allocator.is_retained()
plans["asked"] = allocator.retain_freed_memory()
plans["fast_after"] = fast.configure(model, "fast", device="cpu",
                                     compile_kernels=False).retained_memory
plans["reference_after"] = fast.configure(model, "reference", device="cpu").retained_memory
print(json.dumps(plans))
"""


def test_only_an_explicit_call_retains_and_plans_report_it() -> None:
    """`configure` never tunes the allocator, in either mode; after an explicit
    `retain_freed_memory` every plan of the process says so."""
    assert _python(MODES) == {
        "reference": False,
        "fast": False,
        "before": False,
        "asked": True,
        "fast_after": True,
        "reference_after": True,
    }


BENCH = """
import argparse, json
from benchmarks.bench import Bench
from gradprobe.fast import allocator

args = argparse.Namespace(seed=0, T=2, batch_size=2, device="cpu", exact=False,
                          cuda_graph="off", memory="none")
Bench("sps_tokenizer_cifar", "maxpool_lif", args, serving="{serving}")
print(json.dumps({{"retained": allocator.is_retained()}}))
"""


@pytest.mark.parametrize(("serving", "retained"), [("reference", False), ("fast", True)])
def test_benchmark_workers_retain_memory_only_for_fast_mode(serving: str, retained: bool) -> None:
    assert _python(BENCH.format(serving=serving)) == {"retained": retained}
