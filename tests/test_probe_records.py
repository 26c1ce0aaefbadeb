"""Records and frames: row order and columns of `to_frame`, window-weighted `summarize`."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from gradprobe.probe import FRAME_COLUMNS, SiteRecord, sort_records, summarize, to_frame


def record(step: int, site: str, t0: int, precision: list[float]) -> SiteRecord:
    T = len(precision)
    p = torch.tensor(precision)
    return SiteRecord(step, site, "v", t0, p, p, p, p, torch.full((T,), 4), 8, p)


def test_to_frame_rows_by_step_site_order_and_t() -> None:
    records = [
        record(1, "b", 0, [0.5]),
        record(0, "b", 1, [0.25]),
        record(0, "b", 0, [0.75]),
        record(0, "a", 0, [1.0, 0.0]),
    ]
    assert [(r.step, r.site, r.t0) for r in sort_records(records, ["b", "a"])] == [
        (0, "b", 0), (0, "b", 1), (0, "a", 0), (1, "b", 0)
    ]  # fmt: skip
    frame = to_frame(records, ["b", "a"])
    assert list(frame.columns) == FRAME_COLUMNS
    assert list(zip(frame["step"], frame["site"], frame["t"], strict=True)) == [
        (0, "b", 0), (0, "b", 1), (0, "a", 0), (0, "a", 1), (1, "b", 0)
    ]  # fmt: skip
    assert frame["precision"].tolist() == [0.75, 0.25, 1.0, 0.0, 0.5]
    assert frame["windows"].dtype == "int64" and set(frame["windows_total"]) == {8}
    assert to_frame([]).empty and list(to_frame([]).columns) == FRAME_COLUMNS


def test_summarize_weights_by_windows() -> None:
    frame = pd.DataFrame(
        [
            (0, "a", "v", 0, 1.0, 1.0, 0.0, 0.5, 3, 4, 1.0),
            (0, "a", "v", 1, 0.0, 0.0, 1.0, 0.1, 1, 4, 1.0),
            (0, "b", "w", 0, math.nan, math.nan, math.nan, 0.2, 0, 0, 1.0),
        ],
        columns=FRAME_COLUMNS,
    )
    out = summarize(frame).set_index("site")
    assert out.loc["a", "precision"] == 0.75 and out.loc["a", "tie_rate"] == 0.25
    assert out.loc["a", "spike_rate"] == pytest.approx(0.3) and out.loc["a", "windows"] == 4
    assert math.isnan(out.loc["b", "precision"]) and out.loc["b", "windows"] == 0
