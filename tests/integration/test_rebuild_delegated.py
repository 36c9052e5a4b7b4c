"""`rebuild NAME` while another runner follows the projection: it waits for that runner by the
(transaction id, position) pair the runner checkpoints, never by position alone."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg

from app.db import asyncpg_dsn
from app.projections.registry import PROJECTIONS
from app.projections.runner import load_checkpoint, rebuild
from tests.support import following

INSERT = """
INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata,
                    occurred_at, recorded_at, prev_hash, hash)
VALUES ($1, 1, $2, 'DealOpened', 1, $3::jsonb, '{}'::jsonb, now(), now(), NULL, $4)
RETURNING position
"""


def opened(name: str) -> str:
    return json.dumps(
        {"name": name, "owner": "rick", "pipeline": "default", "pipeline_version": 1,
         "stage": "discovery"}
    )  # fmt: skip


async def test_a_delegated_rebuild_waits_for_the_last_event_in_gap_safe_order(
    owner_url: str, database_url: str, pg: asyncpg.Connection
) -> None:
    # Force the interleaving: transaction A takes its id first but inserts last, so the last
    # event in gap-safe order (B's) has the lower position.
    late = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        transaction = late.transaction()
        await transaction.start()
        await late.fetchval("SELECT pg_current_xact_id()")
        first, second = uuid.uuid4(), uuid.uuid4()
        low = await pg.fetchval(INSERT, second, uuid.uuid4(), opened("B"), b"b")
        high = await late.fetchval(INSERT, first, uuid.uuid4(), opened("A"), b"a")
        await transaction.commit()
    finally:
        await late.close()
    assert low < high

    deals = PROJECTIONS["deals"]
    async with following(database_url, batch_size=1):
        await asyncio.sleep(0.5)  # the runner holds the projection's lock
        applied = await asyncio.wait_for(
            rebuild(asyncpg_dsn(database_url), deals, poll_interval=0.01), timeout=30
        )
        assert applied == 2
        at = await load_checkpoint(pg, deals.name)
        assert at.position == low  # B's event is the last one in gap-safe order
        names = {row["name"] for row in await pg.fetch("SELECT name FROM deals")}
        assert names == {"A", "B"}
