"""GET one deal reads the deals read model, and the log only while that model is behind it:
the read model is trusted as current once its (gap-safe) checkpoint stands at the log's
last event, and never before."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import asyncpg

from app.domain import commands as c
from app.domain.decide import Actor
from app.events.store import EventStore
from app.projections.deals import load_deal
from app.service.deals import CommandContext, DealService
from tests.support import caught_up, following

RICK = CommandContext(Actor("rick", "rep"))


def _reply() -> c.RecordBuyerActivity:
    return c.RecordBuyerActivity(activity_type="email_replied", occurred_at=datetime.now(UTC))


async def test_the_read_model_is_trusted_only_once_it_has_applied_the_whole_log(
    store: EventStore, database_url: str, pg: asyncpg.Connection
) -> None:
    # A service of its own, so no cached head answers for the log.
    writer, reader = DealService(store), DealService(store)
    opened = (await writer.open(c.OpenDeal(name="Acme", owner="rick"), RICK)).state
    deal, v = opened.deal_id, opened.version
    projected, head = await load_deal(pg, deal)
    assert (projected, head) == (None, v)  # not projected yet: the log says where it stands
    assert (await reader.current(deal, projected, head)).version == v

    async with following(database_url):
        await writer.execute(deal, _reply(), RICK)
        await caught_up(pg)
    projected, head = await load_deal(pg, deal)
    assert head is None  # every event applied: no need to ask the log
    assert projected is not None and projected == await reader.load(deal)
    # A deal the log lacks is not there, without a replay either.
    missing = uuid4()
    assert await load_deal(pg, missing) == (None, None)
    assert not (await reader.current(missing, None, None)).exists

    # One event past the read model, on a deal the read model has: the log is asked again.
    await writer.execute(deal, _reply(), RICK)
    projected, head = await load_deal(pg, deal)
    assert projected is not None and projected.version == v + 1 and head == v + 2
    assert (await reader.current(deal, projected, head)).version == v + 2
