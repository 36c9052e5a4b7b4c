"""Test databases on a real PostgreSQL.

With DATABASE_URL unset, an embedded PostgreSQL (pgserver) starts in a temporary directory.
The log cannot be truncated, so one migrated template database is made per session and
every test that needs the database gets its own copy of it (CREATE DATABASE ... TEMPLATE).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import asyncpg_dsn, create_engine, migrate_async, start_embedded, with_database
from app.events.store import EventStore
from app.main import create_app
from app.settings import Settings
from tests.keys import KEYS, seed_keys


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The server's maintenance-database URL: DATABASE_URL's server, or an embedded one."""
    if os.environ.get("DATABASE_URL"):
        yield with_database(os.environ["DATABASE_URL"], "postgres")
        return
    with tempfile.TemporaryDirectory(prefix="dealledger-test-") as data_dir:
        yield start_embedded(Path(data_dir), cleanup_mode="delete")


async def _admin(server_url: str, sql: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def template_name(server_url: str) -> AsyncIterator[str]:
    name = f"dealledger_template_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    await migrate_async(url)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await seed_keys(connection)
    finally:
        await connection.close()
    yield name
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    """A freshly migrated database of this test's own."""
    name = f"dealledger_test_{uuid.uuid4().hex[:12]}"
    await _admin(
        server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}" STRATEGY FILE_COPY'
    )
    yield with_database(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=20)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> EventStore:
    return EventStore(engine)


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain superuser connection to the test database, for raw SQL."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    yield connection
    await connection.close()


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    """The application with its lifespan running against this test's database."""
    application = create_app(Settings(), database_url=database_url)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client acting with the rep key unless a request sends its own Authorization."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=KEYS["rep"].headers
    ) as http:
        yield http


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no Authorization header unless told to."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
