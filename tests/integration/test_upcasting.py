"""A schema version introduced after events were stored: old rows are upcast on every read
(fold, replay over HTTP, projections) while their stored bytes and hashes stay as they were."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import asyncpg
import pytest

from app.db import asyncpg_dsn
from app.domain import commands as c
from app.domain import events as e
from app.domain.decide import Actor
from app.domain.events import EVENT_TYPES, UPCASTERS, parse_event
from app.events.store import EventStore
from app.projections.registry import PROJECTIONS
from app.projections.runner import rebuild_together
from app.service.deals import CommandContext, DealService
from app.settings import Settings
from tests.support import app_client

WHEN = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


class MeetingHeldV2(e.BuyerActivityRecorded):
    """Version 2 of BuyerActivityRecorded, as a later release might add it: a channel."""

    SCHEMA_VERSION: ClassVar[int] = 2
    channel: str


def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    channel = "email" if data["activity_type"].startswith("email") else "unknown"
    return {**data, "channel": channel}


async def test_rows_stored_at_v1_read_as_v2_everywhere(
    store: EventStore, database_url: str, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = DealService(store)
    rick = CommandContext(Actor("rick", "rep"))
    deal = (await service.open(c.OpenDeal(name="Acme", owner="rick"), rick)).state.deal_id
    reply = c.RecordBuyerActivity(activity_type="email_replied", occurred_at=WHEN)
    stored_at = (await service.execute(deal, reply, rick)).position
    row_before = await pg.fetchrow("SELECT data, hash FROM events WHERE position = $1", stored_at)

    # A later release: BuyerActivityRecorded v2, with an upcaster from v1.
    monkeypatch.setitem(EVENT_TYPES, "BuyerActivityRecorded", MeetingHeldV2)
    monkeypatch.setitem(UPCASTERS, ("BuyerActivityRecorded", 1), v1_to_v2)

    (old,) = [event for event in await store.read_stream(deal) if event.position == stored_at]
    assert old.schema_version == 1
    read = parse_event(old.type, old.schema_version, old.data)
    assert isinstance(read, MeetingHeldV2)
    assert read.channel == "email"
    assert (await service.load(deal)).last_buyer_activity_at == WHEN  # the fold

    # Projections rebuilt from the log read the old row through the upcaster.
    applied = await rebuild_together(asyncpg_dsn(database_url), list(PROJECTIONS.values()))
    assert applied == 3
    activity = await pg.fetchrow(
        "SELECT buyer_activity_count, last_buyer_activity_at FROM deal_activity WHERE deal_id = $1",
        deal,
    )
    assert (activity["buyer_activity_count"], activity["last_buyer_activity_at"]) == (1, WHEN)

    # Over HTTP: replay, history as stored (never rewritten), and the chain still verifies.
    async with app_client(database_url, Settings(run_projector=False)) as http:
        replayed = await http.get(f"/v1/deals/{deal}", params={"as_of_position": stored_at})
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["version"] == 3
        history = (await http.get(f"/v1/deals/{deal}/history")).json()["items"]
        assert history[-1]["schema_version"] == 1
        assert "channel" not in history[-1]["data"]
        assert (await http.get(f"/v1/deals/{deal}/verify")).json()["valid"] is True
    row_after = await pg.fetchrow("SELECT data, hash FROM events WHERE position = $1", stored_at)
    assert row_after == row_before
    assert (await store.verify()).valid
