"""The floor for HTTP scenarios: the least a FastAPI route can do on the same server, with
the same uvicorn, pool size and row: take a POST and INSERT one row; GET one row by key."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request

from app.db import asyncpg_dsn

INSERT = (
    "INSERT INTO floor_events (stream_id, version, event_id, type, schema_version, data,"
    " metadata, occurred_at, recorded_at, prev_hash, hash)"
    " VALUES ($1, $2, $3, $4, 1, $5::jsonb, $6::jsonb, $7, now(), NULL, $8)"
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(asyncpg_dsn(os.environ["DATABASE_URL"]), max_size=10)
    app.state.versions = {}
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/deals/{deal_id}/activities", status_code=201)
async def record(deal_id: uuid.UUID, body: dict[str, Any], request: Request) -> dict[str, Any]:
    versions: dict[uuid.UUID, int] = request.app.state.versions
    version = versions[deal_id] = versions.get(deal_id, 0) + 1
    occurred = datetime.fromisoformat(body["occurred_at"])
    data = json.dumps(
        {"activity_type": body["type"], "occurred_at": occurred.isoformat(), "details": {}}
    )
    async with request.app.state.pool.acquire() as connection:
        position = await connection.fetchval(
            INSERT + " RETURNING position",
            deal_id,
            version,
            uuid.uuid4(),
            "BuyerActivityRecorded",
            data,
            '{"actor":{"id":"bench","role":"admin"}}',
            occurred.astimezone(UTC),
            b"\x00" * 32,
        )
    return {"position": position}


@app.get("/deals/{deal_id}")
async def read(deal_id: uuid.UUID, request: Request) -> Any:
    async with request.app.state.pool.acquire() as connection:
        state = await connection.fetchval(
            "SELECT state::text FROM deal_states WHERE deal_id = $1", deal_id
        )
    return {"deal_id": str(deal_id), "state": state}
