"""Faults forced on a PostgreSQL of the test's own: stopped and restarted under a steady write
load, the service answers 503 problem+json with Retry-After meanwhile, serves again without
a restart, and loses no acknowledged write."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # made at import
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import (
    asyncpg_dsn,
    driver_connection,
    migrate_async,
    start_embedded,
    stop_embedded,
)
from app.main import create_app
from app.settings import Settings
from tests.keys import KEYS, seed_keys
from tests.support import served

pytestmark = pytest.mark.db
WHEN = "2026-11-20T10:00:00+00:00"


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An embedded PostgreSQL only this test uses, and its data directory."""
    url = start_embedded(tmp_path, cleanup_mode="delete")
    yield url, tmp_path / "pgdata"
    with contextlib.suppress(Exception):  # restarted by the test: not the process pgserver knows
        control(tmp_path / "pgdata", "stop")
    stop_embedded(tmp_path)


def control(pgdata: Path, *args: str) -> None:
    """pg_ctl on the test's server (as the system user pgserver runs it as, when root)."""
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", *args], pgdata=pgdata, user=user, timeout=60)


@pytest.fixture
async def service(own_server: tuple[str, Path]) -> AsyncIterator[httpx.AsyncClient]:
    url, _ = own_server
    await migrate_async(url)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await seed_keys(connection)
    finally:
        await connection.close()
    settings = Settings(flag_sweep_seconds=3600)
    async with served(create_app(settings, database_url=url)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=KEYS["rep"].headers
        ) as http:
            yield http


async def test_the_service_survives_a_stopped_and_a_restarted_database(
    service: httpx.AsyncClient, own_server: tuple[str, Path]
) -> None:
    url, pgdata = own_server
    opened = await service.post("/v1/deals", json={"name": "Acme", "owner": "rick"})
    assert opened.status_code == 201
    activities = f"/v1/deals/{opened.json()['id']}/activities"
    acknowledged: list[int] = []
    statuses: list[int] = []
    stop = asyncio.Event()

    async def steady_writes() -> None:
        deadline = time.monotonic() + 60  # bounded, whatever happens
        while not stop.is_set() and time.monotonic() < deadline:
            body = {"type": "call_held", "occurred_at": WHEN}
            key = {"Idempotency-Key": str(uuid.uuid4())}
            response = await service.post(activities, json=body, headers=key)
            statuses.append(response.status_code)
            if response.status_code == 201:
                acknowledged.append(response.json()["position"])
            else:
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["retry-after"] == "1"
            await asyncio.sleep(0.02)

    writer = asyncio.create_task(steady_writes())
    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(control, pgdata, "stop")
        await asyncio.sleep(0.5)
        down = await service.post(activities, json={"type": "call_held", "occurred_at": WHEN})
        assert down.status_code == 503, down.text
        assert down.headers["retry-after"] == "1"
        assert (await service.get("/readyz")).status_code == 503
        assert (await service.get("/healthz")).status_code == 200

        await asyncio.to_thread(control, pgdata, "restart")  # starts it again
        await serving_again(service, activities)
        await asyncio.to_thread(control, pgdata, "restart")  # a restart under load
        await serving_again(service, activities)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await writer
    assert 503 in statuses and statuses.count(201) > 10
    assert set(statuses) <= {201, 503}

    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        stored = await connection.fetch(
            "SELECT position FROM events WHERE position = ANY($1::bigint[])", acknowledged
        )
    finally:
        await connection.close()
    assert len(stored) == len(acknowledged)  # no acknowledged write lost
    # The projector resumed: a read of the last write's position is served, not a 503.
    read = await service.get("/v1/deals", params={"min_position": max(acknowledged)}, timeout=30)
    assert read.status_code == 200, read.text


async def serving_again(service: httpx.AsyncClient, url: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = await service.post(url, json={"type": "call_held", "occurred_at": WHEN})
        ready = await service.get("/readyz")
        if answer.status_code == 201 and ready.status_code == 200:
            return
        assert answer.status_code == 503, answer.text
        await asyncio.sleep(0.2)
    raise AssertionError("the service did not serve again within 15 s of the database")


async def test_the_services_sessions_end_a_transaction_left_idle(engine: AsyncEngine) -> None:
    """An open transaction holds every gap-safe reader back: the service's own never idle
    in one for more than a minute (PostgreSQL ends them)."""
    async with driver_connection(engine) as connection:
        assert await connection.fetchval("SHOW idle_in_transaction_session_timeout") == "1min"


async def test_a_killed_embedded_postgres_is_started_again(
    own_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, pgdata = own_server
    await migrate_async(url)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await seed_keys(connection)
    finally:
        await connection.close()
    app = create_app(Settings(flag_sweep_seconds=3600), database_url=url, supervise=tmp_path)
    async with served(app) as asgi:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=KEYS["rep"].headers
        ) as http:
            body = {"name": "Acme", "owner": "rick"}
            assert (await http.post("/v1/deals", json=body)).status_code == 201
            postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGKILL)
            await asyncio.sleep(0.3)
            down = await http.post("/v1/deals", json=body)
            assert down.status_code == 503, down.text
            deadline = time.monotonic() + 30
            while (answer := await http.post("/v1/deals", json=body)).status_code != 201:
                assert answer.status_code == 503, answer.text
                assert time.monotonic() < deadline, "the embedded server was not started again"
                await asyncio.sleep(0.5)
            assert (await http.get("/readyz")).status_code == 200


def test_handles_of_killed_processes_are_forgotten(tmp_path: Path) -> None:
    """A SIGKILLed `serve` left its pid among the server's handles: the next start drops it,
    so the server stops when its last live user exits."""
    start_embedded(tmp_path, cleanup_mode="delete")
    try:
        handles = tmp_path / "pgdata" / ".handle_pids.json"
        dead = subprocess.Popen(["true"])
        dead.wait()
        handles.write_text(json.dumps([*json.loads(handles.read_text()), dead.pid]))
        start_embedded(tmp_path, cleanup_mode="delete")
        assert dead.pid not in json.loads(handles.read_text())
        assert os.getpid() in json.loads(handles.read_text())
    finally:
        stop_embedded(tmp_path)
