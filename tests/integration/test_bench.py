"""The benchmark harness still runs end to end (a smoke run: sizes tiny, no times asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import environment

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.db  # the benchmark starts an embedded PostgreSQL of its own
def test_bench_quick_prints_every_scenario_with_its_floor(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--events",
            "3000",
            "--no-peer",
            "--scale",
            "12000",
            "--write",
            str(out),
        ],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = out.read_text()
    for scenario in (
        "append, single command, 1 writer",
        "append, single command, 16 writers",
        "batch ingest",
        "HTTP command under wrk",
        "HTTP command, serve --workers 2 vs --workers 1",
        "projection lag",
        "webhook lag",
        "rebuild all projections",
        "read one deal",
        "pipeline health",
        "weekly inspection",
        "append with the log sequencer following",
        "inclusion proof from the stored tree",
        "page: board",
        "page: one deal's story",
        "cost at ",  # GET one deal, single append, projection lag: large log vs small
        "disk per million events",
    ):
        line = next(row for row in table.splitlines() if row.startswith(f"| {scenario}"))
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        assert cells[1] not in ("", "-", "0"), line  # a figure was measured
        if not scenario.startswith(
            ("projection lag", "pipeline health", "weekly inspection", "webhook lag")
        ):
            assert cells[3].endswith("%"), line  # ...and compared with its floor
    # A cost row says how the floor itself grew between the two sizes (machine noise or
    # PostgreSQL's own growth, told apart from ours).
    costs = [row for row in table.splitlines() if row.startswith("| cost at ")]
    assert "floor route's GET of the same row, p99 " in costs[0], costs[0]
    assert "raw INSERT into its own table in the same rounds, p99 " in costs[1], costs[1]
