"""Database edges: URL handling, the embedded PostgreSQL, the engine and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from app.domain.errors import DatabaseUnavailable
from app.settings import Settings

if TYPE_CHECKING:  # imported where used: a rebuild's worker processes never migrate (0.2 s each)
    from alembic.config import Config

log = logging.getLogger("dealledger.db")
A = TypeVar("A")
B = TypeVar("B")
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


@contextmanager
def _quiet_runtime_dir() -> Iterator[None]:
    # pgserver asks platformdirs for a runtime dir, which warns on every command where
    # XDG_RUNTIME_DIR is unset (containers, CI); the fallback it takes is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        yield


def start_embedded(data_dir: Path, cleanup_mode: str | None = "stop") -> str:
    """Start (or reuse) the embedded PostgreSQL under data_dir; returns its URL."""
    with _quiet_runtime_dir():
        from pgserver import postgres_server  # lazily: only the embedded path needs it

        data_dir.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(data_dir / "pgdata")
        server = postgres_server.get_server(data_dir / "pgdata", cleanup_mode=cleanup_mode)
    return str(server.get_uri())


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops the server when the last process holding a handle exits; a process
    killed outright (SIGKILL) never lets go of its handle, so the server would never stop.
    Handles of processes that no longer run are dropped before taking ours."""
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import DiskList, process_is_running

    handles = DiskList(pgdata / ".handle_pids.json")
    with PostgresServer._lock:
        alive = [pid for pid in handles.get() if process_is_running(pid)]
        if alive != handles.get():
            handles.put(alive)


def embedded_running(data_dir: Path) -> bool:
    """Whether the embedded PostgreSQL under data_dir is up and accepting connections."""
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir / "pgdata")
    return info is not None and info.is_running() and info.status == "ready"


def restart_embedded(data_dir: Path) -> None:
    """Start the embedded PostgreSQL again after it died (killed, crashed), in place."""
    with _quiet_runtime_dir():
        from pgserver import postgres_server

        pgdata = (data_dir / "pgdata").resolve()
        server = postgres_server.PostgresServer._instances.get(pgdata)
        if server is None:
            start_embedded(data_dir)
            return
        with server._lock:
            server.ensure_postgres_running()


async def supervise_embedded(
    data_dir: Path, *, every: float = 1.0, max_backoff: float = 30.0
) -> None:
    """Keep the embedded PostgreSQL running: check it every `every` seconds and start it
    again when it has died, backing off while starting fails (e.g. the disk is still full)."""
    delay = every
    while True:
        await asyncio.sleep(delay)
        if await asyncio.to_thread(embedded_running, data_dir):
            delay = every
            continue
        log.warning("embedded PostgreSQL under %s is down; starting it again", data_dir)
        try:
            await asyncio.to_thread(restart_embedded, data_dir)
        except Exception:
            delay = min(max(delay, every) * 2, max_backoff)
            log.exception("embedded PostgreSQL did not start; next try in %.0fs", delay)
        else:
            log.warning("embedded PostgreSQL is running again")
            delay = every


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded PostgreSQL this process started under data_dir (if it is the last
    process using it); with cleanup_mode "delete", its data goes too."""
    with _quiet_runtime_dir():
        import psutil  # type: ignore[import-untyped]  # pgserver's own dependency
        from pgserver import postgres_server

        # A server already gone (stopped by hand, or crashed) is stopped: pgserver would
        # raise as it signals the postmaster it remembers.
        with contextlib.suppress(psutil.NoSuchProcess):
            postgres_server.get_server(data_dir / "pgdata").cleanup()


# The role the service connects as: it may read and append events, never change them.
APP_ROLE = "dealledger_app"


def with_user(url: str, user: str, password: str | None = None) -> str:
    """The same server and database, another role (no password: for trusted local sockets)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    login = f"{user}:{password}" if password else user
    return urlunsplit((parts.scheme, f"{login}@{host}", parts.path, parts.query, parts.fragment))


def user_of(url: str) -> str | None:
    return urlsplit(url).username


def owner_url(settings: Settings) -> str:
    """Where migrations run: the owner of the schema (the embedded server's superuser, or
    DEALLEDGER_OWNER_DATABASE_URL, else DATABASE_URL)."""
    if settings.database_url:
        return settings.owner_database_url or settings.database_url
    return start_embedded(settings.data_dir)


def resolve_database_url(settings: Settings) -> str:
    """Where the service connects: DATABASE_URL, or the embedded server as the app role."""
    if settings.database_url:
        return settings.database_url
    return with_user(start_embedded(settings.data_dir), APP_ROLE)


# Everything but changing history: events get SELECT and INSERT only. Re-run after each
# migration so new tables are covered.
GRANTS_SQL = """
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {role};
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM {role};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};
"""


async def grant_app_role(owner: str, role: str, *, create: bool) -> None:
    """Give `role` what the service needs on this database (creating it if asked)."""
    connection = await asyncpg.connect(asyncpg_dsn(owner))
    try:
        quoted = '"' + role.replace('"', '""') + '"'
        exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if not exists and create:
            await connection.execute(f"CREATE ROLE {quoted} LOGIN")
        database = await connection.fetchval("SELECT current_database()")
        await connection.execute(
            f'GRANT CONNECT ON DATABASE "{database}" TO {quoted};' + GRANTS_SQL.format(role=quoted)
        )
        # Read-only statistics, so /readyz and /metrics can tell how old the transaction
        # holding projections back is; an owner who may not grant it just loses that figure.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await connection.execute(f"GRANT pg_read_all_stats TO {quoted}")
    finally:
        await connection.close()


def prepare(settings: Settings) -> str:
    """Migrate as the owner and grant the service role its rights; returns the service URL.

    Embedded: the role is created and used. With DATABASE_URL: when a separate
    DEALLEDGER_OWNER_DATABASE_URL is set, DATABASE_URL's role gets the grants; otherwise the
    service runs as whatever DATABASE_URL says (see the README for the SQL to separate them).
    """
    owner = owner_url(settings)
    migrate(owner)
    service = resolve_database_url(settings)
    role = user_of(service)
    if role and owner != service and role != user_of(owner):
        asyncio.run(grant_app_role(owner, role, create=not settings.database_url))
    return service


# The service's own sessions never sit in an open transaction for long: one that does would
# hold every gap-safe reader (projections) back. PostgreSQL ends it after this.
SESSION_SETTINGS = {"idle_in_transaction_session_timeout": "60s"}


def create_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max(pool_size // 2, 2),
        connect_args={"server_settings": SESSION_SETTINGS},
    )


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision` (blocking; call from sync code)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def migrate_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate, url, revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


# Errors that mean the connection or the server is gone, not that a statement failed.
_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, crash, starting up
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_lost(error: BaseException, connection: asyncpg.Connection | None = None) -> bool:
    """Whether `error` means the connection or the server is gone (not a failed statement)."""
    if isinstance(error, (*_LOST, asyncpg.exceptions.InternalClientError)):
        return True  # the latter: a protocol state an interrupted operation left behind
    if isinstance(error, asyncpg.InterfaceError):  # e.g. "connection is closed"
        return connection is None or connection.is_closed()
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or is_lost(error.orig or Exception(), connection)
    cause = error.__cause__
    return cause is not None and cause is not error and is_lost(cause, connection)


async def _checkout(engine: AsyncEngine) -> tuple[AsyncConnection, asyncpg.Connection]:
    """A pooled connection that is not known dead: one the server closed (a restart) is
    dropped with the rest of the pool made before it, and a fresh one taken."""
    for _ in range(2):
        try:
            connection = await engine.connect()
            # Just checked out, so the property answers without I/O (get_raw_connection
            # spends a greenlet switch on it: ~10 us of a ~40 us checkout).
            sync = connection.sync_connection
            if sync is not None and not sync.invalidated:
                raw = sync.connection
            else:
                raw = await connection.get_raw_connection()
        except Exception as error:
            if is_lost(error):
                raise DatabaseUnavailable(f"the database cannot be reached: {error}") from error
            raise
        driver = raw.driver_connection
        assert driver is not None
        if not driver.is_closed():
            return connection, driver
        await _drop(engine, connection)
    raise DatabaseUnavailable("the database keeps closing new connections")


async def _drop(engine: AsyncEngine, connection: AsyncConnection) -> None:
    await connection.invalidate()
    await connection.close()
    await engine.dispose(close=False)  # connections made before the outage are all suspect


Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection | None]]
"""One more pooled connection for a request that holds one already (`spare_connection`),
for queries that can run side by side; None: run them one after the other."""


@asynccontextmanager
async def spare_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection | None]:
    """Another pooled connection while fewer than the pool's size are out, else None: under
    load, requests each waiting for a second connection while holding their first could
    hold every connection there is."""
    pool = engine.pool
    if isinstance(pool, QueuePool) and pool.checkedout() >= pool.size():
        yield None
        return
    async with driver_connection(engine) as connection:
        yield connection


async def side_by_side(
    connection: asyncpg.Connection,
    connect: Connect | None,
    main: Callable[[asyncpg.Connection], Coroutine[Any, Any, A]],
    aside: Callable[[asyncpg.Connection], Coroutine[Any, Any, B]],
) -> tuple[A, B]:
    """`main` on `connection` while `aside` runs on a spare connection from `connect`; one
    after the other on `connection` when there is none (the same answers either way)."""
    if connect is None:
        return await main(connection), await aside(connection)
    async with connect() as other:
        if other is None:
            return await main(connection), await aside(connection)
        task = asyncio.create_task(aside(other))
        try:
            return await main(connection), await task
        finally:
            task.cancel()  # when `main` failed; retrieves its outcome either way
            await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection as the asyncpg driver sees it, for hot paths with explicit SQL.

    A lost connection or server raises DatabaseUnavailable (503 with Retry-After) and drops
    the pool, so connections made before an outage are replaced, never reused dead.
    """
    connection, driver = await _checkout(engine)
    try:
        yield driver
    except Exception as error:
        if not is_lost(error, driver):
            raise
        await _drop(engine, connection)
        raise DatabaseUnavailable(f"the database connection was lost: {error}") from error
    finally:
        await connection.close()


async def close_quickly(connection: asyncpg.Connection) -> None:
    """Close, or drop the socket if a graceful close does not finish at once: a follower
    cancelled mid-query (shutdown) must not wait on the server to answer it."""
    try:
        await asyncio.wait_for(connection.close(), timeout=2)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        connection.terminate()
