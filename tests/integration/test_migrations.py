"""Migrations that carry data forward: what an existing database has is still there, where
the new schema expects it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.db import asyncpg_dsn, migrate_async, with_database
from tests.conftest import _admin


@pytest.fixture
async def blank_url(server_url: str) -> AsyncIterator[str]:
    name = f"dealledger_migrations_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    yield with_database(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_deals_keep_their_pipeline_version_as_columns(blank_url: str) -> None:
    await migrate_async(blank_url, "0015_notify_after_commit")
    connection = await asyncpg.connect(asyncpg_dsn(blank_url))
    try:
        for n, (key, version) in enumerate([("default", 1), ("enterprise", 3)]):
            state = {"pipeline_key": key, "pipeline_version": version, "stage": "discovery"}
            await connection.execute(
                "INSERT INTO deals (deal_id, opened_position, last_position, version, name,"
                " owner, stage, status, state)"
                " VALUES ($1, $2, $2, 1, 'd', 'o', 'discovery', 'open', $3::jsonb)",
                uuid.uuid4(),
                n + 1,
                json.dumps(state),
            )
        await migrate_async(blank_url)
        rows = await connection.fetch(
            "SELECT pipeline_key, pipeline_version FROM deals ORDER BY opened_position"
        )
    finally:
        await connection.close()
    assert [tuple(r) for r in rows] == [("default", 1), ("enterprise", 3)]
