"""Bulk-load a generated history: the same decider and the same rows (hash chains included)
the service would write, COPYed in instead of appended one command at a time, so a million
events take a minute rather than an hour. `dealledger verify` passes on the result."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.db import asyncpg_dsn
from app.domain.errors import DomainError
from app.events.hashing import encode_events
from app.service.deals import DealService
from app.service.simulation import History, decide_step

EVENTS_PER_DEAL = 32  # a generated deal averages ~33 events over 120 days (measured)
COLUMNS = (
    "stream_id",
    "version",
    "event_id",
    "type",
    "schema_version",
    "data",
    "metadata",
    "occurred_at",
    "recorded_at",
    "prev_hash",
    "hash",
)


async def bulk_load(
    url: str,
    events: int,
    *,
    seed: int = 1,
    days: float = 120,
    end: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[int, list[UUID], float]:
    """Load about `events` events; returns how many, the deal ids, and the seconds taken."""
    started = time.perf_counter()
    history = History(
        deals=max(1, events // EVENTS_PER_DEAL), seed=seed, days=days, end=end or datetime.now(UTC)
    )
    heads: dict[UUID, bytes | None] = {}
    batch: list[tuple[Any, ...]] = []
    written = 0
    connection = await asyncpg.connect(asyncpg_dsn(url))
    # The states of every deal loaded so far stay live: young collections every 700
    # allocations kept walking them (as in the server: app.runtime.settle_heap). ~10 % faster.
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:

        async def flush() -> None:
            nonlocal written
            await connection.copy_records_to_table("events", records=batch, columns=COLUMNS)
            written += len(batch)
            batch.clear()
            if on_progress is not None:
                on_progress(written)

        while (step := history.next()) is not None:
            before = history.states.get(step.deal_id)
            try:
                decided, after = decide_step(before, step)
            except DomainError:
                assert before is not None
                history.settled(step, before)
                continue
            if not decided:  # a no-op (e.g. completing a step already done)
                history.settled(step, after)
                continue
            new = DealService.to_new_events(step.deal_id, decided, step.actor)
            rows = encode_events(
                step.deal_id,
                before.version if before else 0,
                heads.get(step.deal_id),
                new,
                step.at,
            )
            for row in rows:
                batch.append((step.deal_id, *row[:7], step.at, *row[7:]))
            heads[step.deal_id] = rows[-1][-1]
            history.settled(step, after)
            if len(batch) >= 20_000:
                await flush()
        if batch:
            await flush()
        await connection.execute("ANALYZE events")
    finally:
        gc.set_threshold(*thresholds)
        await connection.close()
    return written, list(heads), time.perf_counter() - started
