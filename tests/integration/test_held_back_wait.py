"""A projection that finds the next events held back by an older transaction still running
waits a little, longer each time while that transaction lasts; once it has applied events
again, its next such wait starts afresh. (It did not: under a steady load of writers there is
nearly always a transaction in flight, the waits grew to the poll interval and stayed there,
and every read model lagged by up to half a second.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import pytest

from app.db import asyncpg_dsn
from app.domain import commands as c
from app.domain.decide import Actor
from app.events.store import EventStore
from app.projections import runner
from app.projections.deals import DealsProjection
from app.projections.log_tree import LogTree
from app.projections.runner import Projection, ProjectionRunner
from app.service.deals import CommandContext, DealService

RICK = CommandContext(Actor("rick", "rep"))


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(1000):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 10 s")


async def _applied_up_to(pg: asyncpg.Connection, name: str, position: int | None) -> bool:
    at = await pg.fetchval("SELECT position FROM projection_checkpoints WHERE name = $1", name)
    return bool((at or 0) >= (position or 0))


async def test_the_wait_for_held_back_events_starts_afresh_once_events_are_applied(
    store: EventStore, database_url: str, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the runner did, in order: ("applied", events) per batch, ("wait", seconds) per
    # wait for held-back events.
    seen: list[tuple[str, float]] = []
    apply, wait = runner.apply_next_batch, runner._wait_held_back

    async def applied(
        connection: asyncpg.Connection, projection: Projection, batch_size: int
    ) -> int:
        count = await apply(connection, projection, batch_size)
        seen.append(("applied", count))
        return count

    async def waited(seconds: float) -> None:
        seen.append(("wait", seconds))
        await wait(seconds)

    monkeypatch.setattr(runner, "apply_next_batch", applied)
    monkeypatch.setattr(runner, "_wait_held_back", waited)
    service = DealService(store)
    deal = (await service.open(c.OpenDeal(name="Acme", owner="rick"), RICK)).state.deal_id
    reply = c.RecordBuyerActivity(activity_type="email_replied", occurred_at=datetime.now(UTC))
    follower = ProjectionRunner(
        asyncpg_dsn(database_url), [DealsProjection()], poll_interval=0.5, elect=False
    )
    task = asyncio.create_task(follower.run())
    older = await asyncpg.connect(asyncpg_dsn(database_url))  # transactions holding events
    newer = await asyncpg.connect(asyncpg_dsn(database_url))  # back, the older first
    try:
        opened = await pg.fetchval("SELECT max(position) FROM events")
        await _eventually(lambda: _applied_up_to(pg, "deals", opened))
        # A transaction older than the next event holds it back while it runs: the waits grow.
        first_hold = older.transaction()
        await first_hold.start()
        await older.fetchval("SELECT pg_current_xact_id()")
        first = (await service.execute(deal, reply, RICK)).position

        async def grown() -> bool:
            return any(kind == "wait" and seconds >= 0.16 for kind, seconds in seen)

        await _eventually(grown)
        # Another, begun before the next event, will hold that one back in turn.
        second_hold = newer.transaction()
        await second_hold.start()
        await newer.fetchval("SELECT pg_current_xact_id()")
        await service.execute(deal, reply, RICK)
        released = len(seen)
        await first_hold.commit()  # the first event is applied; the second is held back
        await _eventually(lambda: _applied_up_to(pg, "deals", first))

        def waits_after_progress() -> list[tuple[str, float]]:
            later = seen[released:]
            starts = [i for i, (kind, n) in enumerate(later) if kind == "applied" and n > 0]
            return [step for step in later[starts[0] :] if step[0] == "wait"] if starts else []

        async def waited_again() -> bool:
            return bool(waits_after_progress())

        await _eventually(waited_again)
        assert waits_after_progress()[0] == ("wait", 0.01), seen
        await second_hold.commit()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await older.close()
        await newer.close()


GATHER = 0.2
"""How long the log's tree gathers in these tests."""


@contextlib.asynccontextmanager
async def _tree_following(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> AsyncIterator[tuple[DealService, UUID]]:
    """A deal opened, and the log's tree (gathering for GATHER s) following, caught up."""
    service = DealService(store)
    deal = (await service.open(c.OpenDeal(name="Acme", owner="rick"), RICK)).state.deal_id
    tree = LogTree(gather_seconds=GATHER)
    follower = ProjectionRunner(asyncpg_dsn(database_url), [tree], elect=False)
    task = asyncio.create_task(follower.run())
    try:
        opened = await pg.fetchval("SELECT max(position) FROM events")
        await _eventually(lambda: _applied_up_to(pg, tree.name, opened))
        yield service, deal
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _reply() -> c.RecordBuyerActivity:
    return c.RecordBuyerActivity(activity_type="email_replied", occurred_at=datetime.now(UTC))


async def test_a_gathering_projection_gathers_while_events_are_held_back(
    store: EventStore, database_url: str, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log's tree gathers events for a moment before a transaction of its own; held back
    by a transaction in flight (nearly always, under steady writes), it waited 10 ms instead,
    and applied a handful of events per transaction (the sequencer cost appends a fifth)."""
    waits: list[float] = []
    wait = runner._wait_held_back

    async def waited(seconds: float) -> None:
        waits.append(seconds)
        await wait(seconds)

    monkeypatch.setattr(runner, "_wait_held_back", waited)
    async with _tree_following(store, database_url, pg) as (service, deal):
        older = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            hold = older.transaction()
            await hold.start()
            await older.fetchval("SELECT pg_current_xact_id()")
            held = (await service.execute(deal, _reply(), RICK)).position

            async def waited_twice() -> bool:
                return len(waits) >= 2

            await _eventually(waited_twice)
            await hold.commit()
            await _eventually(lambda: _applied_up_to(pg, LogTree.name, held))
            assert min(waits) >= GATHER, waits
        finally:
            await older.close()


async def test_a_gathering_projection_following_steady_writes_applies_them_in_few_batches(
    store: EventStore, database_url: str, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caught up, the log's tree gathers before its next transaction. It went straight on
    instead: under steady writes the log was never empty when it looked, and it applied the
    few events each of its own transactions took to commit (a batch per 2-3 appends)."""
    batches: list[int] = []
    apply = runner.apply_next_batch

    async def applied(
        connection: asyncpg.Connection, projection: Projection, batch_size: int
    ) -> int:
        count = await apply(connection, projection, batch_size)
        if count:
            batches.append(count)
        return count

    monkeypatch.setattr(runner, "apply_next_batch", applied)
    async with _tree_following(store, database_url, pg) as (service, deal):
        batches.clear()
        loop = asyncio.get_running_loop()
        started = loop.time()
        last = None
        for _ in range(100):  # one writer, back to back
            last = (await service.execute(deal, _reply(), RICK)).position
        writing = loop.time() - started
        await _eventually(lambda: _applied_up_to(pg, LogTree.name, last))
        assert sum(batches) == 100
        # One batch per gathering while the writes went on, and one for the rest.
        assert len(batches) <= writing / GATHER + 2, (batches, writing)
