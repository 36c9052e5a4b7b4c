"""Shared test helpers: running the CLI as a process, following and comparing projections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.db import asyncpg_dsn
from app.domain.flags import FlagRules
from app.main import create_app
from app.projections.flags import sweep
from app.projections.registry import PROJECTIONS, build_projections
from app.projections.runner import ProjectionRunner, wait_for_position
from app.settings import Settings
from tests.keys import KEYS


def dealledger(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(values)
    return env


@contextlib.asynccontextmanager
async def following(
    database_url: str, batch_size: int = 100, poll_interval: float = 0.05
) -> AsyncIterator[ProjectionRunner]:
    """Every projection following the log in this process while the block runs."""
    runner = ProjectionRunner(
        asyncpg_dsn(database_url),
        list(build_projections().values()),  # fresh: their pipeline caches are per database
        batch_size=batch_size,
        poll_interval=poll_interval,
    )
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def head(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT coalesce(max(position), 0) FROM events"))


async def caught_up(pg: asyncpg.Connection, within: float = 60) -> None:
    """Wait until every projection has applied the newest event."""
    position = await head(pg)
    if position:
        assert await wait_for_position(pg, position, list(PROJECTIONS), within), (
            "projections did not catch up"
        )


async def read_models(pg: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model row, in a stable order (jsonb as its normalized text)."""
    queries = {
        "deals": "SELECT * FROM deals ORDER BY deal_id",
        "deal_states": "SELECT deal_id, state::text FROM deal_states ORDER BY deal_id",
        "stage_intervals": "SELECT * FROM stage_intervals ORDER BY deal_id, seq",
        "deal_activity": "SELECT deal_id, last_buyer_activity_at, last_activity_at,"
        " buyer_activity_count, counts_by_type::text FROM deal_activity ORDER BY deal_id",
        "flag_subjects": "SELECT deal_id, owner, stage, status, last_recorded_at, subject::text,"
        " due_at FROM flag_subjects ORDER BY deal_id",
        "deal_flags": "SELECT deal_id, kind, raised_at, cleared_at, severity, numbers::text,"
        " evaluated_at FROM deal_flags ORDER BY deal_id, kind, raised_at",
        "blocker_log": "SELECT * FROM blocker_log ORDER BY blocker_id",
        "log_leaves": "SELECT * FROM log_leaves ORDER BY leaf_index",
        "log_nodes": "SELECT * FROM log_nodes ORDER BY height, index",
    }
    return {name: [tuple(r) for r in await pg.fetch(sql)] for name, sql in queries.items()}


async def settle(pg: asyncpg.Connection, as_of: datetime) -> None:
    """Bring time-dependent read models (flags) to the same clock on both sides of a
    comparison: sweep at `as_of`, as the projector does periodically."""
    await sweep(pg, as_of, FlagRules())


async def event_counts(pg: asyncpg.Connection) -> dict[str, int]:
    rows = await pg.fetch("SELECT type, count(*) AS n FROM events GROUP BY type")
    return {r["type"]: r["n"] for r in rows}


@contextlib.asynccontextmanager
async def served(application: FastAPI) -> AsyncIterator[ASGIApp]:
    """The app with its lifespan running, handing each request the lifespan's state the way
    an ASGI server (uvicorn) does: a shallow copy per request."""
    async with application.router.lifespan_context(application) as state:

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            await application({**scope, "state": dict(state or {})}, receive, send)

        yield serve


@contextlib.asynccontextmanager
async def app_client(
    database_url: str, settings: Settings, base_url: str = "http://test"
) -> AsyncIterator[httpx.AsyncClient]:
    """An app of its own (lifespan, settings, caches) on this database, with the rep's key."""
    application = create_app(settings, database_url=database_url)
    async with served(application) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=KEYS["rep"].headers
        ) as http:
            yield http
