"""Migrations that carry data forward: what an existing database has is still there, where
the new schema expects it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

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


async def test_deals_keep_what_reports_read_of_them_as_columns(blank_url: str) -> None:
    await migrate_async(blank_url, "0015_notify_after_commit")
    entered = "2026-03-01T09:00:00+00:00"
    states = [
        {"pipeline_key": "default", "pipeline_version": 1, "next_step": None, "evidence": {}},
        {
            "pipeline_key": "enterprise",
            "pipeline_version": 3,
            "opened_at": "2026-02-01T08:00:00+00:00",
            "last_buyer_activity_at": "2026-03-05T10:00:00+00:00",
            "next_step": {"description": "call", "due_date": "2026-03-10"},
            "evidence": {
                "a": {"occurred_at": "2026-03-02T00:00:00+00:00"},
                "b": {"occurred_at": "2026-03-04T00:00:00+00:00"},
            },
        },
    ]
    connection = await asyncpg.connect(asyncpg_dsn(blank_url))
    try:
        for n, state in enumerate(states):
            await connection.execute(
                "INSERT INTO deals (deal_id, opened_position, last_position, version, name,"
                " owner, stage, status, stage_entered_at, state)"
                " VALUES ($1, $2, $2, 1, 'd', 'o', 'discovery', 'open', $3, $4::jsonb)",
                uuid.uuid4(),
                n + 1,
                datetime.fromisoformat(entered),
                json.dumps(state),
            )
        await migrate_async(blank_url)
        rows = await connection.fetch(
            "SELECT pipeline_key, pipeline_version, opened_at, last_buyer_activity_at,"
            " last_evidence_at, has_next_step FROM deals ORDER BY opened_position"
        )
    finally:
        await connection.close()
    at = datetime.fromisoformat
    assert [tuple(r) for r in rows] == [
        ("default", 1, at(entered), None, None, False),  # opened_at: else when it entered
        (
            "enterprise",
            3,
            at("2026-02-01T08:00:00+00:00"),
            at("2026-03-05T10:00:00+00:00"),
            at("2026-03-04T00:00:00+00:00"),
            True,
        ),
    ]


async def test_deal_states_move_out_of_the_deals_table_intact(blank_url: str) -> None:
    await migrate_async(blank_url, "0016_deal_columns")
    states = {uuid.uuid4(): {"name": f"deal {n}", "evidence": {"e": n}} for n in range(3)}
    connection = await asyncpg.connect(asyncpg_dsn(blank_url))
    try:
        for n, (deal_id, state) in enumerate(states.items()):
            await connection.execute(
                "INSERT INTO deals (deal_id, opened_position, last_position, version, name,"
                " owner, stage, status, state)"
                " VALUES ($1, $2, $2, 1, 'd', 'o', 'discovery', 'open', $3::jsonb)",
                deal_id,
                n + 1,
                json.dumps(state),
            )
        await migrate_async(blank_url)
        moved = await connection.fetch("SELECT deal_id, state::text FROM deal_states")
        columns = await connection.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'deals'::regclass"
            " AND attnum > 0 AND NOT attisdropped"
        )
        kept = await connection.fetchval("SELECT count(*) FROM deals")
    finally:
        await connection.close()
    assert {r["deal_id"]: json.loads(r["state"]) for r in moved} == states
    assert "state" not in {r["attname"] for r in columns}
    assert kept == 3
