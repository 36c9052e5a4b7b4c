"""Database edges: URL handling, the embedded PostgreSQL, the engine and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def asyncpg_dsn(url: str) -> str:
    """A plain `postgresql://` DSN asyncpg accepts, from any form a provider or tool gives."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {parts.scheme!r}")
    query = [("ssl" if key == "sslmode" else key, value) for key, value in parse_qsl(parts.query)]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), parts.fragment))


def sqlalchemy_url(url: str) -> str:
    """The same DSN for SQLAlchemy's asyncpg dialect."""
    return "postgresql+asyncpg" + asyncpg_dsn(url)[len("postgresql") :]


def with_database(url: str, database: str) -> str:
    """The same server, another database name."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def start_embedded(data_dir: Path, cleanup_mode: str | None = "stop") -> str:
    """Start (or reuse) the embedded PostgreSQL under data_dir; returns its URL."""
    from pgserver import postgres_server  # lazily: only the embedded path needs it

    data_dir.mkdir(parents=True, exist_ok=True)
    server = postgres_server.get_server(data_dir / "pgdata", cleanup_mode=cleanup_mode)
    return str(server.get_uri())


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded server's URL (started on demand)."""
    if settings.database_url:
        return settings.database_url
    return start_embedded(settings.data_dir)


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision` (blocking; call from sync code)."""
    command.upgrade(alembic_config(url), revision)


async def migrate_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate, url, revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection as the asyncpg driver sees it, for hot paths with explicit SQL."""
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        yield driver
