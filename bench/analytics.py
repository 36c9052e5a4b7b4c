"""Analytics over many deals: what a manager waits for on a team of 100k deals, answered from
the read models. The log is bulk-loaded with short histories (20 days, ~16 events a deal) so
that many deals fit a bench run; these routes cost by deals and stays, not by events."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from app.db import asyncpg_dsn
from app.projections.flags import sweep
from app.projections.registry import rules_of
from app.settings import Settings
from bench import scenarios
from bench.common import Row, fresh_database, vacuum_analyze
from bench.load import EVENTS_PER_DEAL, bulk_load

ROUTES = (
    ("time in stage", "/v1/analytics/time-in-stage"),
    ("conversion", "/v1/analytics/conversion"),
    ("forecast", "/v1/analytics/forecast"),
    ("pipeline health", "/v1/pipeline/health"),
    ("pipeline, first page", "/v1/pipeline"),
    ("weekly inspection, first page", "/v1/inspections/weekly"),
    ("page: board, default pipeline", "/ui"),  # a signed-in browser's
)


async def sweep_once(url: str) -> None:
    """What a projector's first sweep after a start does: judge every open deal now. A
    rebuild judges each deal as of its last event, so without it the weekly review judges,
    on every request, the deals time has flagged since the log's end (2.2k of 79k here)."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await sweep(connection, datetime.now(UTC), rules_of(Settings()))
    finally:
        await connection.close()


async def analytics_rows(server: str, deals: int, reads: int) -> list[Row]:
    url = await fresh_database(server, "dealledger_bench_analytics")
    _, ids, _ = await bulk_load(url, deals * EVENTS_PER_DEAL, seed=21, days=20)
    scenarios.rebuild_all(url)
    await sweep_once(url)
    await vacuum_analyze(url)
    rows = []
    async with scenarios.servers(url) as (ours, _):
        for label, path in ROUTES:
            found = await scenarios.one_client_gets(ours, path, reads, path.startswith("/ui"))
            rows.append(
                Row(
                    f"analytics at {len(ids):,} deals: {label}, GET, 1 client",
                    found.rate,
                    None,
                    "requests/s",
                    found.percentile(0.5),
                    found.percentile(0.99),
                    target="p99 ≤ 250 ms",
                    note="from read models; whole team, no filter",
                )
            )
    return rows
