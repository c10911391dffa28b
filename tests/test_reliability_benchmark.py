"""benchmarks/reliability.py in its tiny mode: every boundary tried, no crash, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

BOUNDARIES = {
    "environment step/reset",
    "tool-call parsing",
    "server requests",
    "tool schemas",
    "episode-log lines",
    "recorder on a full disk",
    "config / --set",
    "CLI arguments",
    "checkpoints",
}


@pytest.mark.slow
def test_every_boundary_is_tried_with_no_crash_and_nothing_lost(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    reliability = load_benchmark("reliability")
    rows = reliability.run(1, tmp_path, model_dir=tiny_model_dir)
    assert {row.boundary for row in rows} == BOUNDARIES
    for row in rows:
        assert row.inputs > 0 and row.inputs == row.accepted + row.named + row.crashes, row
        assert row.crashes == 0 and row.lost == 0, row.crash_examples
    text = reliability.table(rows)
    assert "| **total** |" in text and "Crashes:" not in text
