"""HTTP commands under `wrk` (a C load generator: a Python client on the same 2 cores would
measure itself): POST /v1/deals/{id}/activities spread over many open deals, against the
least a FastAPI route can do with the same uvicorn and row (bench/floor_app.py), and
`serve --workers 2` against `--workers 1` under the same load."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from app.db import create_engine
from app.events.store import EventStore
from app.service.deals import DealService
from bench.common import Row
from bench.scenarios import Server, open_deals

CONNECTIONS = 16
THREADS = 2

_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
local deals = {{{deals}}}
local body = '{{"type": "email_replied", "occurred_at": "2026-01-01T00:00:00+00:00"}}'
local n = 0
-- Each wrk thread starts on its own share of the deals: two threads walking the same
-- ring in step would send concurrent commands to one deal (retried races, not load).
local started = 0
function setup(thread)
  thread:set("share", started)
  started = started + 1
end
function init(args)
  n = math.floor(share * #deals / {threads})
end
request = function()
  n = n + 1
  return wrk.format(nil, "{prefix}/deals/" .. deals[(n % #deals) + 1] .. "/activities", nil, body)
end
"""


def wrk_available() -> str | None:
    """The wrk binary, installed with apt-get when missing and we are root; None if not."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        for step in (["install"], ["update"], ["install"]):  # a fresh machine has no lists
            args = ["apt-get", *step, "-q"] + (["-y", "wrk"] if step == ["install"] else [])
            subprocess.run(args, check=False, capture_output=True)
            found = shutil.which("wrk")
            if found is not None:
                break
    return found


@contextlib.contextmanager
def _script(deals: list[uuid.UUID], prefix: str, token: str | None) -> Iterator[Path]:
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    text = _SCRIPT.format(
        auth=auth,
        deals=", ".join(f'"{d}"' for d in deals),
        prefix=prefix,
        threads=THREADS,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(text)
    try:
        yield Path(file.name)
    finally:
        Path(file.name).unlink()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _percentile(out: str, which: str) -> float:
    """A line of wrk's latency distribution ("     50%   26.89ms"), not a "75.50%" of its
    thread stats; NaN when wrk printed none."""
    found = re.search(rf"^\s*{which}%\s+([\d.]+(?:us|ms|s))\s*$", out, re.M)
    return _ms(found.group(1)) if found else float("nan")


def run_wrk(port: int, script: Path, seconds: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, non-2xx responses) of one wrk run."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50, p99 = _percentile(out, "50"), _percentile(out, "99")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, p50, p99, int(bad.group(1)) if bad else 0


async def deals_for_load(url: str, count: int) -> list[uuid.UUID]:
    engine = create_engine(url, pool_size=2)
    try:
        return await open_deals(DealService(EventStore(engine)), count)
    finally:
        await engine.dispose()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def http_command(
    ours: Server, floor: Server, deals: list[uuid.UUID], seconds: int, rounds: int = 3
) -> Row:
    """Rounds alternate between ours and the floor (the machine's noise hits both); each
    figure is the median of its rounds."""
    results: dict[str, list[tuple[float, float, float, int]]] = {"ours": [], "floor": []}
    with (
        _script(deals, "/v1", ours.token) as mine,
        _script(deals, "", None) as bare,
    ):
        run_wrk(ours.port, mine, 1)  # warm up both
        run_wrk(floor.port, bare, 1)
        for _ in range(rounds):
            results["ours"].append(run_wrk(ours.port, mine, seconds))
            results["floor"].append(run_wrk(floor.port, bare, seconds))
    us, them = results["ours"], results["floor"]
    refused = sum(r[3] for r in us) + sum(r[3] for r in them)
    return Row(
        f"HTTP command under wrk, POST activity, {CONNECTIONS} connections",
        _median([r[0] for r in us]),
        _median([r[0] for r in them]),
        "requests/s",
        _median([r[1] for r in us]),
        _median([r[2] for r in us]),
        _median([r[2] for r in them]),
        target="≥ 60% of floor",
        note=f"wrk -t{THREADS} -c{CONNECTIONS}, {rounds} rounds of {seconds}s alternating"
        + (f"; {refused} non-2xx" if refused else ""),
    )


def workers_row(
    one: Server, two: Server, deals: list[uuid.UUID], seconds: int, rounds: int = 3
) -> Row:
    """`serve --workers 2` against `--workers 1`, the same wrk load on each."""
    results: dict[int, list[tuple[float, float, float, int]]] = {1: [], 2: []}
    with _script(deals, "/v1", one.token) as script:
        run_wrk(one.port, script, 1)
        run_wrk(two.port, script, 1)
        for _ in range(rounds):
            results[1].append(run_wrk(one.port, script, seconds))
            results[2].append(run_wrk(two.port, script, seconds))
    refused = sum(r[3] for rs in results.values() for r in rs)
    return Row(
        "HTTP command, serve --workers 2 vs --workers 1",
        _median([r[0] for r in results[2]]),
        _median([r[0] for r in results[1]]),
        "requests/s",
        _median([r[1] for r in results[2]]),
        _median([r[2] for r in results[2]]),
        _median([r[2] for r in results[1]]),
        target="more than 1 worker alone",
        note="floor column: --workers 1; 2 cores shared with PostgreSQL and wrk"
        + (f"; {refused} non-2xx" if refused else ""),
    )


def unavailable(scenario: str) -> Row:
    return Row(
        scenario,
        float("nan"),
        None,
        "requests/s",
        note="wrk is not installed: apt-get install wrk (never a Python client on these cores)",
    )


@contextlib.asynccontextmanager
async def serving_workers(url: str, token: str | None) -> AsyncIterator[tuple[Server, Server]]:
    """`serve --workers 1` and `serve --workers 2` on one database (projector off in both:
    the comparison is of the API processes)."""
    argv = ["-m", "app", "serve", "--port", "{port}", "--no-projector", "--workers"]
    one = Server([*argv, "1"], {"DATABASE_URL": url}, token)
    two = Server([*argv, "2"], {"DATABASE_URL": url}, token)
    try:
        await one.ready("/readyz")
        await two.ready("/readyz")
        yield one, two
    finally:
        one.stop()
        two.stop()
