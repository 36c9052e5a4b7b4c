"""DATABASE_READ_URL: read-only routes (lists, analytics, reports, pages) read a replica,
and `min_position` waits for the replica's own replay. No streaming replica runs here: the
"replica" is a second database that has replayed nothing yet, which is what a replica far
behind looks like to the service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.db import APP_ROLE, asyncpg_dsn, with_database, with_user
from app.settings import Settings
from tests.conftest import APP_PASSWORD
from tests.keys import KEYS
from tests.support import app_client

MANAGER = KEYS["manager"].headers


@pytest.fixture
async def replica_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    name = f"dealledger_replica_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    finally:
        await admin.close()
    yield with_user(with_database(server_url, name), APP_ROLE, APP_PASSWORD)
    admin = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_read_routes_read_the_replica_and_min_position_waits_for_its_replay(
    database_url: str, replica_url: str
) -> None:
    settings = Settings(database_read_url=replica_url, read_wait_seconds=0.3)
    async with app_client(database_url, settings) as client:
        opened = await client.post("/v1/deals", json={"name": "Primary only", "owner": "o"})
        assert opened.status_code == 201, opened.text
        deal, position = opened.json()["id"], opened.json()["position"]

        # Writes and a deal's own reads go to the primary...
        assert (await client.get(f"/v1/deals/{deal}")).status_code == 200
        # ...lists and analytics to the replica, which has not replayed the deal.
        listed = await client.get("/v1/deals")
        assert listed.status_code == 200 and listed.json()["items"] == []
        pipeline = await client.get("/v1/pipeline", headers=MANAGER)
        assert pipeline.status_code == 200, pipeline.text

        # Reading your write on the replica waits for it there, then says it is behind.
        behind = await client.get("/v1/deals", params={"min_position": position})
        assert behind.status_code == 503, behind.text
        assert behind.headers["content-type"] == "application/problem+json"
        assert behind.headers["retry-after"] == "1"
        assert str(position) in behind.json()["detail"]
        # A position nobody wrote is the client's mistake, on a replica too.
        never = await client.get("/v1/deals", params={"min_position": position + 1000})
        assert never.status_code in (400, 422), never.text
        assert never.headers["content-type"] == "application/problem+json"

    # Without a read URL the same reads see the write.
    async with app_client(database_url, Settings()) as client:
        listed = await client.get("/v1/deals", params={"min_position": position})
        assert [d["id"] for d in listed.json()["items"]] == [deal]
