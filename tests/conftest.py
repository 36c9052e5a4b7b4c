"""Test databases on a real PostgreSQL.

With DATABASE_URL unset, an embedded PostgreSQL (pgserver) starts in a temporary directory.
The log cannot be truncated, so one migrated template database is made per session and
every test that needs the database gets its own copy of it (CREATE DATABASE ... TEMPLATE).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp

from app.db import (
    APP_ROLE,
    asyncpg_dsn,
    create_engine,
    grant_app_role,
    migrate_async,
    start_embedded,
    stop_embedded,
    with_database,
    with_user,
)
from app.events.store import EventStore
from app.main import create_app
from app.settings import Settings
from tests.keys import KEYS, seed_keys
from tests.support import served

APP_PASSWORD = "dealledger-test"

# The log's signing key is made under the data directory: a throwaway one per test run,
# never the user's own (subprocesses of CLI tests inherit it).
os.environ["DEALLEDGER_DATA_DIR"] = _data_dir = tempfile.mkdtemp(prefix="dealledger-data-")
atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The server's maintenance-database URL: DATABASE_URL's server, or an embedded one."""
    if os.environ.get("DATABASE_URL"):
        yield with_database(os.environ["DATABASE_URL"], "postgres")
        return
    with tempfile.TemporaryDirectory(prefix="dealledger-test-") as data_dir:
        yield start_embedded(Path(data_dir), cleanup_mode="delete")
        stop_embedded(Path(data_dir))  # before the directory goes, or the server outlives it


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
    await grant_app_role(url, APP_ROLE, create=True)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(f"ALTER ROLE {APP_ROLE} PASSWORD '{APP_PASSWORD}'")
        await seed_keys(connection)
    finally:
        await connection.close()
    yield name
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def owner_url(server_url: str, template_name: str) -> AsyncIterator[str]:
    """A freshly migrated database of this test's own, as its owner (a superuser)."""
    name = f"dealledger_test_{uuid.uuid4().hex[:12]}"
    await _admin(
        server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}" STRATEGY FILE_COPY'
    )
    yield with_database(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(owner_url: str) -> str:
    """The same database as the service's role sees it: it cannot change events."""
    return with_user(owner_url, APP_ROLE, APP_PASSWORD)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=20)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> EventStore:
    return EventStore(engine)


@pytest.fixture
async def pg(owner_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain superuser connection to the test database, for raw SQL."""
    connection = await asyncpg.connect(asyncpg_dsn(owner_url))
    yield connection
    await connection.close()


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[ASGIApp]:
    """The application with its lifespan running against this test's database."""
    async with served(create_app(Settings(), database_url=database_url)) as application:
        yield application


@pytest.fixture
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client acting with the rep key unless a request sends its own Authorization."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=KEYS["rep"].headers
    ) as http:
        yield http


@pytest.fixture
async def anonymous(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no Authorization header unless told to."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches PostgreSQL is marked `db`: `pytest -m "not db"` runs the rest
    (domain, service on the in-memory log, hashing, architecture) in seconds."""
    for item in items:
        if "server_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)
