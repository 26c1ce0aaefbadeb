"""`benchmarks/fast_parts.py`: a step with each optional CPU kernel off, same numbers."""

from __future__ import annotations

import re

import pytest

from benchmarks import fast_parts


def test_every_configuration_is_timed_with_the_same_first_loss(
    capsys: pytest.CaptureFixture,
) -> None:
    args = ["--model", "spikformer_2_384_cifar", "--batch-size", "2", "--T", "1"]
    fast_parts.main([*args, "--repeats", "1", "--warmup", "1", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("spikformer_2_384_cifar (lif_maxpool), B=2, T=1, 1 threads")
    rows = {line[:22].strip(): line for line in lines[1:]}
    assert list(rows) == list(fast_parts.CONFIGS)
    assert " 1.00x the full path" in rows["full fast path"]
    losses = {re.search(r"first loss (\S+)$", line).group(1) for line in rows.values()}
    assert len(losses) == 1  # the kernels change speed, never the forward's bits
