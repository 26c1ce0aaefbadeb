"""``gradprobe probe``: the table, the files, determinism, ImageFolder input, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gradprobe.cli import main

FAST = ["--model-arg", "embed_dim=16", "--T", "2", "--batch-size", "8", "--no-progress"]


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse reports bad flags by exiting
        return exit_.code


def test_probe_on_embedded_digits(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["probe", "--num-images", "16", "--variants", "lif_maxpool", "maxpool_lif,avgpool_lif"]
    assert run([*argv, *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "16 images from digits" in printed
    summary = pd.read_csv(out / "probe_summary.csv")
    assert (
        list(summary["variant"]) == ["lif_maxpool"] * 2 + ["maxpool_lif"] * 2 + ["avgpool_lif"] * 2
    )
    assert (summary.loc[summary["variant"] == "maxpool_lif", "precision"] == 1.0).all()
    assert summary.loc[summary["variant"] == "avgpool_lif", "precision"].isna().all()
    rows = pd.read_csv(out / "probe_rows.csv")
    assert set(rows["model"]) == {"sps_tokenizer_cifar"} and set(rows["t"]) == {0, 1}
    assert set(rows["step"]) == {0, 1}  # 16 images in batches of 8
    doc = json.loads((out / "probe_summary.json").read_text())
    assert doc["images"] == 16 and len(doc["summary"]) == 6
    table_lines = [line for line in printed.splitlines() if line.startswith("stem.stages.")]
    assert len(table_lines) == 6 and "n/a" in table_lines[-1]


def test_same_seed_same_numbers(tmp_path) -> None:
    for name in ("a", "b"):
        argv = ["probe", "--num-images", "8", "--variants", "lif_maxpool", "--seed", "3"]
        assert run([*argv, *FAST, "--out", str(tmp_path / name)]) == 0
    a, b = ((tmp_path / n / "probe_rows.csv").read_bytes() for n in ("a", "b"))
    assert a == b


def test_probe_on_an_image_folder_parent(tmp_path, capsys) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        folder = tmp_path / "test" / cls
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    argv = ["probe", "--data", str(tmp_path), "--num-images", "4", "--variants", "maxpool_lif"]
    assert run([*argv, *FAST, "--out", str(tmp_path / "out")]) == 0
    assert f"4 images from {tmp_path / 'test'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--variants", "lif_maxpool", "max_lif"], ["'max_lif'", "choices", "maxpool_lif"]),
        (["--model", "resnet50"], ["'resnet50'", "choices", "sps_tokenizer_cifar"]),
        (["--data", "/definitely/not/here"], ["'/definitely/not/here'", "does not exist"]),
        (["--T", "0"], ["--T", "'0'"]),
        (["--num-images", "many"], ["--num-images", "'many'"]),
        (["--model-arg", "embed_dim=12"], ["embed_dim 12"]),
    ],
)
def test_user_errors_are_one_line(argv, names, capsys) -> None:
    assert run(["probe", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    for name in names:
        assert name in err


@pytest.mark.slow  # a fresh interpreter: imports alone take seconds
def test_console_module_exits_2_without_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gradprobe", "probe", "--variants", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gradprobe probe: error: unknown downsampling variant 'nope'; choices: "
        "avgpool_lif, lif_maxpool, maxpool_lif, strided_conv"
    ]
