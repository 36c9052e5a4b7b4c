"""Every deal as it stood at a past time (what the board, forecast, pipeline and forecast
accuracy of a past day are computed from) equals each deal's events recorded by then,
replayed, at every time in the log: deals settled by then (read from the read model),
touched later (replayed), opened later (absent), and changed where the projection has not
caught up yet (replayed from the log); filtered by the owner and status each had then.
Flag subjects replayed many deals to a read equal each deal replayed alone."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import asyncpg
import pytest

from app.domain import commands as c
from app.domain.decide import Actor
from app.domain.errors import DomainError
from app.domain.state import DealState
from app.events.store import EventStore
from app.service.deals import CommandContext, DealService
from app.service.simulation import run_workload
from app.service.snapshots import deal_states, subject_as_of, subjects_then
from tests.support import caught_up, following

TICK = timedelta(microseconds=1)
REP = CommandContext(Actor("crm", "rep"))


async def replayed(
    service: DealService, pg: asyncpg.Connection, as_of: datetime
) -> list[DealState]:
    """The reference: every stream read to `as_of` and folded, one at a time, in log order."""
    streams = await pg.fetch("SELECT stream_id FROM events WHERE version = 1 ORDER BY position")
    states = [await service.load(r["stream_id"], recorded_up_to=as_of) for r in streams]
    return [state for state in states if state.exists]


async def test_deals_as_of_any_time_are_their_events_replayed_to_then(
    database_url: str, store: EventStore, pg: asyncpg.Connection
) -> None:
    service = DealService(store)
    async with following(database_url, batch_size=40):
        first = await run_workload(service, deals=12, commands=150, seed=5)
        for deal_id in first.deals[-4:]:  # closed, and settled since
            with contextlib.suppress(DomainError):  # unless the workload closed it
                await service.execute(deal_id, c.DisqualifyDeal("cannot_afford"), REP)
        await caught_up(pg)
        closed = "SELECT count(*) FROM deals WHERE status = 'disqualified'"
        assert await pg.fetchval(closed) >= 2
    # The projection has stopped: what follows is in the log only.
    await run_workload(service, deals=3, commands=20, seed=6)
    changed = 0
    for deal_id in first.deals[:6]:
        try:
            await service.execute(deal_id, c.ChangeDeal(amount=Decimal("4321")), REP)
            changed += 1
        except DomainError:  # closed by the workload: nothing to change
            pass
    assert changed
    behind = await pg.fetchval(
        "SELECT count(DISTINCT stream_id) FROM events WHERE position >"
        " (SELECT position FROM projection_checkpoints WHERE name = 'deals')"
    )
    assert behind >= 3 + changed

    times = sorted({r["recorded_at"] for r in await pg.fetch("SELECT recorded_at FROM events")})
    sizes: set[int] = set()
    statuses: set[str] = set()
    found_theirs = False
    owner = (await service.load(first.deals[0])).owner
    for at in [times[0] - TICK, *times[::7], *(t - TICK for t in times[3::7]), times[-1]]:
        every = await replayed(service, pg, at)
        assert await deal_states(pg, service, at) == every, at
        sizes.add(len(every))
        # Filtered by the owner and status each deal had then (some open then, closed later).
        opened = await deal_states(pg, service, at, status="open")
        assert opened == [s for s in every if s.status == "open"], at
        theirs = await deal_states(pg, service, at, owner=owner, status="disqualified")
        assert theirs == [s for s in every if s.owner == owner and s.status == "disqualified"], at
        statuses.update(s.status for s in every)
        found_theirs = found_theirs or bool(theirs)
    assert 0 in sizes and 12 + 3 in sizes and len(sizes) > 3  # from none to all, and between
    assert {"open", "disqualified"} <= statuses and found_theirs


async def test_flag_subjects_replayed_together_equal_each_replayed_alone(
    store: EventStore, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = DealService(store)
    workload = await run_workload(service, deals=7, commands=90, seed=7)
    never = uuid4()  # no stream: an empty subject, as one not opened yet
    ids = [*workload.deals, never]
    monkeypatch.setattr("app.service.snapshots.REPLAYED_TOGETHER", 3)  # several reads
    times = sorted({r["recorded_at"] for r in await pg.fetch("SELECT recorded_at FROM events")})
    for at in [times[0] - TICK, *times[::9], *(t - TICK for t in times[4::9]), times[-1]]:
        together = await subjects_then(pg, service, ids, at)
        assert together == {d: await subject_as_of(service, d, at) for d in ids}, at
