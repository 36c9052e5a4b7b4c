"""The projection runner: catch up gap-safely from a checkpoint, then follow the log.

Each projection writes its own tables and its checkpoint in one transaction per batch, so a
crash anywhere resumes exactly where the last committed batch ended. One runner per
projection is active at a time (a session advisory lock); a second one waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

import asyncpg

from app.domain.state import Recorded
from app.events.recorded import to_recorded
from app.events.store import Checkpoint, RecordedEvent, read_all_on, record_of

log = logging.getLogger("dealledger.projections")


@dataclass(frozen=True)
class Envelope:
    """One event as projections get it: stored columns plus the parsed domain event."""

    stored: RecordedEvent
    recorded: Recorded

    @property
    def stream_id(self) -> UUID:
        return self.stored.stream_id

    @property
    def position(self) -> int:
        return self.stored.position


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        """Fold `batch` into this projection's tables (inside the batch's transaction)."""


def lock_key(name: str) -> int:
    """A stable advisory-lock key per projection name."""
    return int.from_bytes(
        hashlib.sha256(f"projection:{name}".encode()).digest()[:8], "big", signed=True
    )


async def load_checkpoint(connection: asyncpg.Connection, name: str) -> Checkpoint:
    row = await connection.fetchrow(
        "SELECT transaction_id::text::bigint AS xid, position FROM projection_checkpoints"
        " WHERE name = $1",
        name,
    )
    return Checkpoint(row["xid"], row["position"]) if row else Checkpoint()


async def _save_checkpoint(connection: asyncpg.Connection, name: str, at: Checkpoint) -> None:
    await connection.execute(
        "INSERT INTO projection_checkpoints (name, transaction_id, position)"
        " VALUES ($1, $2::text::xid8, $3) ON CONFLICT (name) DO UPDATE"
        " SET transaction_id = excluded.transaction_id, position = excluded.position",
        name,
        str(at.transaction_id),
        at.position,
    )


async def apply_next_batch(
    connection: asyncpg.Connection, projection: Projection, limit: int
) -> int:
    """Apply the next gap-safe batch after the stored checkpoint; returns events applied."""
    after = await load_checkpoint(connection, projection.name)
    rows = await read_all_on(connection, after, limit)
    if not rows:
        return 0
    batch = []
    for row in rows:
        stored = record_of(row)
        batch.append(Envelope(stored, to_recorded(stored)))
    last = batch[-1].stored
    async with connection.transaction():
        await projection.apply(connection, batch)
        await _save_checkpoint(
            connection, projection.name, Checkpoint(last.transaction_id, last.position)
        )
    return len(batch)


async def reset(connection: asyncpg.Connection, projection: Projection) -> None:
    """Empty the projection's tables and rewind its checkpoint to the start of the log."""
    async with connection.transaction():
        await connection.execute(f"TRUNCATE {', '.join(projection.tables)}")
        await _save_checkpoint(connection, projection.name, Checkpoint())


@contextlib.asynccontextmanager
async def exclusive(
    dsn: str, projection: Projection, on_wait: Callable[[], None] | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the projection's advisory lock (waits while another holds it)."""
    connection = await asyncpg.connect(dsn)
    try:
        key = lock_key(projection.name)
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", key):
            if on_wait is not None:
                on_wait()
            await connection.execute("SELECT pg_advisory_lock($1)", key)
        yield connection
    finally:
        await connection.close()  # closing the session releases the lock


async def rebuild(
    dsn: str,
    projection: Projection,
    *,
    batch_size: int = 5000,
    on_progress: Callable[[int], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> int:
    """Drop and replay `projection` from the start of the log; returns events applied."""
    async with exclusive(dsn, projection, on_wait) as connection:
        await reset(connection, projection)
        done = 0
        while applied := await apply_next_batch(connection, projection, batch_size):
            done += applied
            if on_progress is not None:
                on_progress(done)
        return done


class ProjectionRunner:
    """Runs every projection: catch up, then follow (LISTEN/NOTIFY, polling as fallback)."""

    def __init__(
        self,
        dsn: str,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.5,
    ) -> None:
        self.dsn = dsn
        self.projections = projections
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._wakes = {p.name: asyncio.Event() for p in projections}

    def _wake_all(self, *_: object) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def run(self) -> None:
        """Follow the log until cancelled."""
        listener = await asyncpg.connect(self.dsn)
        try:
            await listener.add_listener("events", self._wake_all)
            await asyncio.gather(*(self._follow(p) for p in self.projections))
        finally:
            with contextlib.suppress(Exception):
                await listener.close()

    async def _follow(self, projection: Projection) -> None:
        wake = self._wakes[projection.name]

        def waiting() -> None:
            log.info("projection %s: another runner is active; waiting", projection.name)

        async with exclusive(self.dsn, projection, waiting) as connection:
            log.info("projection %s: running", projection.name)
            while True:
                wake.clear()
                started = time.monotonic()
                applied = await apply_next_batch(connection, projection, self.batch_size)
                if applied:
                    log.debug(
                        "projection %s: %d events in %.3fs",
                        projection.name,
                        applied,
                        time.monotonic() - started,
                    )
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll_interval)


async def wait_for_position(
    connection: asyncpg.Connection,
    position: int,
    names: Sequence[str],
    within_seconds: float,
) -> bool:
    """True once every named projection has applied the event at `position`."""
    deadline = time.monotonic() + within_seconds
    target: int | None = None
    while True:
        if target is None:
            target = await connection.fetchval(
                "SELECT transaction_id::text::bigint FROM events WHERE position = $1", position
            )
        if target is not None:
            behind = await connection.fetchval(
                "SELECT count(*) FROM unnest($1::text[]) AS wanted(name)"
                " LEFT JOIN projection_checkpoints c USING (name)"
                " WHERE c.name IS NULL"
                " OR (c.transaction_id::text::bigint, c.position) < ($2::bigint, $3::bigint)",
                list(names),
                target,
                position,
            )
            if behind == 0:
                return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
