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
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from app.db import SESSION_SETTINGS, close_quickly, is_lost
from app.domain.pipeline_versions import PIPELINE_EVENT_TYPES
from app.domain.state import Recorded
from app.events.log import Checkpoint, RecordedEvent
from app.events.recorded import to_recorded
from app.events.store import read_all_on, record_of
from app.projections import step_aside
from app.telemetry import PROJECTION_ERRORS

log = logging.getLogger("dealledger.projections")


@dataclass(frozen=True)
class Envelope:
    """One event as projections get it: the row read, its JSON decoded (`stored`) and the
    domain event parsed (`recorded`) when a projection first asks. The log's tree never
    does (it hashes, it does not read): decoding every row was half of its work."""

    row: Mapping[str, Any]

    @cached_property
    def stored(self) -> RecordedEvent:
        return record_of(self.row)

    @cached_property
    def recorded(self) -> Recorded:
        return to_recorded(self.stored)

    @property
    def stream_id(self) -> UUID:
        stream_id: UUID = self.row["stream_id"]
        return stream_id

    @property
    def position(self) -> int:
        position: int = self.row["position"]
        return position

    @property
    def version(self) -> int:
        version: int = self.row["version"]
        return version

    @property
    def type(self) -> str:
        type_: str = self.row["type"]
        return type_

    @property
    def hash(self) -> bytes:
        digest: bytes = self.row["hash"]
        return digest

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.row["transaction_id"], self.row["position"])


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


async def load_checkpoint(
    connection: asyncpg.Connection, name: str, *, for_update: bool = False
) -> Checkpoint:
    row = await connection.fetchrow(
        "SELECT transaction_id::text::bigint AS xid, position FROM projection_checkpoints"
        " WHERE name = $1" + (" FOR UPDATE" if for_update else ""),
        name,
    )
    return Checkpoint(row["xid"], row["position"]) if row else Checkpoint()


async def _ensure_checkpoint(connection: asyncpg.Connection, name: str) -> None:
    await connection.execute(
        "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name
    )


async def _save_checkpoint(connection: asyncpg.Connection, name: str, at: Checkpoint) -> None:
    await connection.execute(
        "UPDATE projection_checkpoints SET transaction_id = $2::text::xid8, position = $3"
        " WHERE name = $1",
        name,
        str(at.transaction_id),
        at.position,
    )


async def apply_next_batch(
    connection: asyncpg.Connection, projection: Projection, limit: int
) -> int:
    """Apply the next gap-safe batch after the stored checkpoint; returns events applied.

    The checkpoint row is locked for the whole batch, so a concurrent `reset` (a rebuild
    asked for while this runner follows) waits for the batch and never interleaves with it.
    """
    return await _apply_together(connection, [projection], limit)


class _Diverged(Exception):
    """Projections meant to move together no longer stand at one checkpoint (one was reset
    by a `rebuild NAME` that delegated to this process)."""


async def _apply_together(
    connection: asyncpg.Connection, projections: Sequence[Projection], limit: int
) -> int:
    """The next batch after the first projection's checkpoint, read and parsed once, applied
    to every projection given (all at that checkpoint) in one transaction."""
    async with connection.transaction():
        checkpoints = [
            await load_checkpoint(connection, p.name, for_update=True) for p in projections
        ]
        if len(set(checkpoints)) != 1:
            raise _Diverged
        # A projection can say the next events are not for it (the webhook outbox with no
        # endpoint): its checkpoint moves past them unread.
        unheard = getattr(projections[0], "unheard", None) if len(projections) == 1 else None
        if unheard is not None and (passed := await unheard(connection, checkpoints[0])):
            await _save_checkpoint(connection, projections[0].name, passed[0])
            return int(passed[1])
        rows = await read_all_on(connection, checkpoints[0], limit)
        if not rows:
            return 0
        batch = [Envelope(row) for row in rows]
        # Pipeline versions live in streams of their own: no deal read model folds them;
        # the log's tree takes every event.
        deals_only = [e for e in batch if e.type not in PIPELINE_EVENT_TYPES]
        last = batch[-1].checkpoint
        for projection in projections:
            events = batch if getattr(projection, "every_stream", False) else deals_only
            if events:
                await projection.apply(connection, events)
            await _save_checkpoint(connection, projection.name, last)
    return len(rows)


async def rebuild_together(
    dsn: str,
    projections: Sequence[Projection],
    *,
    batch_size: int = 5000,
    on_progress: Callable[[int], None] | None = None,
) -> int | None:
    """Drop and replay several projections in one pass over the log: each event is read and
    parsed once, not once per projection. Only when no runner follows any of them (all their
    locks are free now); otherwise None, and the caller rebuilds them one at a time."""
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    try:
        for projection in projections:
            if not await connection.fetchval(
                "SELECT pg_try_advisory_lock($1)", lock_key(projection.name)
            ):
                return None  # closing the session below releases the locks taken
        for projection in projections:
            await reset(connection, projection)
        done = 0
        try:
            while applied := await _apply_together(connection, projections, batch_size):
                done += applied
                if on_progress is not None:
                    on_progress(done)
        except _Diverged:
            # We hold every lock, so the reset one waits for us to replay it: finish each
            # projection on its own from wherever it stands.
            for projection in projections:
                while await apply_next_batch(connection, projection, batch_size):
                    pass
            done = int(await connection.fetchval("SELECT count(*) FROM events"))
            if on_progress is not None:
                on_progress(done)
        return done
    finally:
        await connection.close()


async def tick(connection: asyncpg.Connection, projection: Projection, now: datetime) -> None:
    """Let a projection whose rows depend on time (flags) catch up with the clock."""
    on_tick = getattr(projection, "tick", None)
    if on_tick is None:
        return
    async with connection.transaction():
        await load_checkpoint(connection, projection.name, for_update=True)
        await on_tick(connection, now)


async def reset(connection: asyncpg.Connection, projection: Projection) -> None:
    """Empty the projection's tables and rewind its checkpoint to the start of the log."""
    await _ensure_checkpoint(connection, projection.name)
    async with connection.transaction():
        await load_checkpoint(connection, projection.name, for_update=True)
        await connection.execute(f"TRUNCATE {', '.join(projection.tables)}")
        await _save_checkpoint(connection, projection.name, Checkpoint())


@contextlib.asynccontextmanager
async def exclusive(
    dsn: str, projection: Projection, on_wait: Callable[[], None] | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the projection's advisory lock (waits while another holds it)."""
    async with _try_exclusive(dsn, projection) as connection:
        if connection is not None:
            yield connection
            return
    if on_wait is not None:
        on_wait()
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", lock_key(projection.name))
        await _ensure_checkpoint(connection, projection.name)
        yield connection
    finally:
        await close_quickly(connection)  # closing the session releases the lock


@contextlib.asynccontextmanager
async def _try_exclusive(
    dsn: str, projection: Projection
) -> AsyncIterator[asyncpg.Connection | None]:
    """The projection's lock if it is free now, else None (nobody waits)."""
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    try:
        if not await connection.fetchval(
            "SELECT pg_try_advisory_lock($1)", lock_key(projection.name)
        ):
            await connection.close()
            yield None
            return
        await _ensure_checkpoint(connection, projection.name)
        yield connection
    finally:
        if not connection.is_closed():
            await close_quickly(connection)


async def rebuild(
    dsn: str,
    projection: Projection,
    *,
    batch_size: int = 5000,
    on_progress: Callable[[int], None] | None = None,
    on_delegate: Callable[[], None] | None = None,
    poll_interval: float = 0.25,
) -> int:
    """Drop and replay `projection` from the start of the log; returns events applied.

    When no runner follows the projection, this process replays it. When one does (e.g. in
    `dealledger serve`), waiting for its lock would wait forever; instead the projection is
    reset in place and the active runner replays it, while this watches its checkpoint.
    """
    async with _try_exclusive(dsn, projection) as connection:
        if connection is not None:
            await reset(connection, projection)
            done = 0
            while applied := await apply_next_batch(connection, projection, batch_size):
                done += applied
                if on_progress is not None:
                    on_progress(done)
            return done
    if on_delegate is not None:
        on_delegate()
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    try:
        # The last event in gap-safe order: the runner is done when its checkpoint reaches
        # that (transaction id, position) pair; positions alone commit out of order.
        row = await connection.fetchrow(
            "SELECT transaction_id::text::bigint AS xid, position FROM events"
            " ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1"
        )
        head = Checkpoint(row["xid"], row["position"]) if row else Checkpoint()
        await reset(connection, projection)
        while True:
            at = await load_checkpoint(connection, projection.name)
            done = await connection.fetchval(
                "SELECT count(*) FROM events"
                " WHERE (transaction_id, position) <= ($1::text::xid8, $2)",
                str(at.transaction_id),
                at.position,
            )
            if on_progress is not None:
                on_progress(done)
            if at >= head:
                return int(done)
            await asyncio.sleep(poll_interval)
    finally:
        await connection.close()


class ProjectionStopped(Exception):
    """A projection met an event it cannot apply: recorded in `projection_failures`, and the
    projection stays at the event before it (never skipping it) until a retry succeeds."""

    def __init__(self, projection: str, position: int, error: BaseException) -> None:
        super().__init__(f"projection {projection} stopped at position {position}: {error!r}")
        self.projection, self.position = projection, position


async def _stop_at_poison(
    connection: asyncpg.Connection, projection: Projection, within: int
) -> ProjectionStopped | None:
    """After a batch failed: apply its events one at a time up to the one that fails, record
    it and say so (None if all `within` went through this time)."""
    for _ in range(within):
        try:
            if not await apply_next_batch(connection, projection, 1):
                return None
        except Exception as single:
            if is_lost(single):
                raise
            at = await load_checkpoint(connection, projection.name)
            (row,) = await read_all_on(connection, at, 1)
            await connection.execute(
                "INSERT INTO projection_failures"
                " (projection, position, transaction_id, event_id, event_type, error)"
                " VALUES ($1, $2, $3::text::xid8, $4, $5, $6)"
                " ON CONFLICT (projection) DO UPDATE SET position = excluded.position,"
                " transaction_id = excluded.transaction_id, event_id = excluded.event_id,"
                " event_type = excluded.event_type, error = excluded.error,"
                " failed_at = now(), attempts = projection_failures.attempts + 1",
                projection.name,
                row["position"],
                str(row["transaction_id"]),
                row["event_id"],
                row["type"],
                f"{type(single).__name__}: {single}"[:2000],
            )
            return ProjectionStopped(projection.name, row["position"], single)
    return None


async def failures(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    """Projections stopped by an event they cannot apply, with where and why."""
    return list(
        await connection.fetch(
            "SELECT projection, position, event_id, event_type, error, failed_at, attempts"
            " FROM projection_failures ORDER BY projection"
        )
    )


PROJECTOR_LOCK = lock_key("projector")
PROJECTOR_APP = "dealledger projector"


@contextlib.asynccontextmanager
async def elected(dsn: str, poll_seconds: float = 1.0) -> AsyncIterator[None]:
    """Hold the projector's lock: one process projects, however many API processes run.

    Standbys poll for the lock on one connection each (not one blocked connection per
    projection); when the elected process dies its session ends, the lock with it, and a
    standby takes over within `poll_seconds`. Each projection's own lock still guards its
    tables, so a projector that lost its session overlaps nobody's work."""
    me = f"{PROJECTOR_APP} {socket.gethostname()}:{os.getpid()}"
    connection = await asyncpg.connect(
        dsn, server_settings={**SESSION_SETTINGS, "application_name": me[:63]}
    )
    try:
        waiting = False
        while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", PROJECTOR_LOCK):
            if not waiting:
                log.info("another process projects; standing by")
                waiting = True
            await asyncio.sleep(poll_seconds)
        log.info("elected projector (%s)", me)
        yield
    finally:
        await close_quickly(connection)


async def _lock_holder(connection: asyncpg.Connection, key: int) -> str | None:
    """The application name of the session holding advisory lock `key` outright, or None."""
    name: str | None = await connection.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock'"
        " AND l.objsubid = 1 AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid"
        " LIMIT 1",
        (key >> 32) & 0xFFFFFFFF,  # a bigint key shows as two 32-bit halves
        key & 0xFFFFFFFF,
    )
    return name


async def projector_holder(connection: asyncpg.Connection) -> str | None:
    """Who projects now (its application name: host and pid), or None."""
    return await _lock_holder(connection, PROJECTOR_LOCK)


async def rebuild_holder(connection: asyncpg.Connection) -> str | None:
    """Which rebuild has asked the projector to step aside (host and pid), or None."""
    return await _lock_holder(connection, step_aside.REBUILD_LOCK)


class ProjectionRunner:
    """Runs every projection: catch up, then follow (LISTEN/NOTIFY, polling as fallback).

    An event a projection cannot apply stops that projection alone: it is recorded (see
    `failures`), logged as an error, and retried every `stopped_retry_interval` (a fixed
    release applies it and the projection resumes); the others go on.
    """

    def __init__(
        self,
        dsn: str,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.5,
        tick_interval: float = 60.0,
        stopped_retry_interval: float = 300.0,
        elect: bool = True,
    ) -> None:
        self.dsn = dsn
        self.elect = elect
        self.projections = projections
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.tick_interval = tick_interval
        self.stopped_retry_interval = stopped_retry_interval
        self._wakes = {p.name: asyncio.Event() for p in projections}
        self._aside: set[str] = set()  # asked to step aside for a rebuild (step_aside.py)

    def _wake_all(self, *_: object) -> None:
        for wake in self._wakes.values():
            wake.set()

    def _asked_aside(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        names = step_aside.asked(payload) & self._wakes.keys()
        self._aside |= names
        for name in names:
            self._wakes[name].set()

    async def run(self) -> None:
        """Follow the log until cancelled: once this process is the elected projector."""
        if not self.elect:
            await self._run()
            return
        async with elected(self.dsn):
            await self._run()

    async def _run(self) -> None:
        listener = await asyncpg.connect(self.dsn, server_settings=SESSION_SETTINGS)
        try:
            await listener.add_listener("events", self._wake_all)
            await listener.add_listener(step_aside.CHANNEL, self._asked_aside)
            await asyncio.gather(*(self._follow(p) for p in self.projections))
        finally:
            await close_quickly(listener)

    async def _follow(self, projection: Projection) -> None:
        """Follow forever; a failure (lost connection, a bad event) is logged and retried."""
        delay = 1.0
        while True:
            started = time.monotonic()
            try:
                if projection.name in self._aside:
                    self._aside.discard(projection.name)
                    log.info("projection %s: stepped aside for a rebuild", projection.name)
                    await step_aside.wait_out_rebuild(self.dsn)
                await self._follow_once(projection)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except ProjectionStopped as stopped:
                log.error("%s; retrying in %.0fs", stopped, self.stopped_retry_interval)
                await asyncio.sleep(self.stopped_retry_interval)
            except Exception:
                if time.monotonic() - started > 60:
                    delay = 1.0  # it had been running fine: start backing off afresh
                log.exception("projection %s failed; retrying in %.0fs", projection.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _follow_once(self, projection: Projection) -> None:
        wake = self._wakes[projection.name]

        def waiting() -> None:
            log.info("projection %s: another runner is active; waiting", projection.name)

        async with exclusive(self.dsn, projection, waiting) as connection:
            log.info("projection %s: running", projection.name)
            ticked = 0.0
            tick_seconds = getattr(projection, "tick_seconds", self.tick_interval)
            # A projection nobody reads at once (the log's tree) gathers events for a moment
            # after a wake, and after each batch that caught it up: one transaction per many
            # appends instead of one per append.
            gather = getattr(projection, "gather_seconds", 0.0)
            stopped = await connection.fetchval(
                "SELECT position FROM projection_failures WHERE projection = $1", projection.name
            )
            held = 0.0
            sweeping = False
            while True:
                if projection.name in self._aside:
                    return  # lets go of the lock; `_follow` waits the rebuild out
                wake.clear()
                started = time.monotonic()
                try:
                    applied = await apply_next_batch(connection, projection, self.batch_size)
                except Exception as error:
                    PROJECTION_ERRORS.labels(projection.name).inc()
                    if is_lost(error):
                        raise
                    poison = await _stop_at_poison(connection, projection, self.batch_size)
                    if poison is not None:
                        raise poison from error
                    continue
                if applied and stopped is not None:
                    await connection.execute(
                        "DELETE FROM projection_failures WHERE projection = $1", projection.name
                    )
                    log.warning("projection %s: resumed past position %d", projection.name, stopped)
                    stopped = None
                if applied:
                    log.debug(
                        "projection %s: %d events in %.3fs",
                        projection.name,
                        applied,
                        time.monotonic() - started,
                    )
                    held = 0.0  # the backoff below is for one wait, not for every one after
                    if gather and applied < self.batch_size:
                        # Caught up with what had committed: gather again before the next
                        # transaction. Under steady writes it never found the log empty, and
                        # applied the few events each of its transactions took to commit.
                        await asyncio.sleep(gather)
                    continue
                if sweeping or time.monotonic() - ticked >= tick_seconds:
                    if not sweeping:
                        ticked = time.monotonic()
                    await tick(connection, projection, datetime.now(UTC))
                    # A tick in pages (the flags' sweep): new events first, then the next.
                    sweeping = bool(getattr(projection, "sweeping", False))
                    if sweeping:
                        continue
                # Events past the checkpoint that the gap-safe read could not take yet (an
                # older transaction still runs): they were announced already, so look again
                # soon, backing off, instead of sleeping until the next poll.
                if await _held_back(connection, projection.name):
                    held = min(held * 2, self.poll_interval) if held else 0.01
                    # A gathering projection gathers here too: under steady writes some
                    # transaction is nearly always in flight, and 10 ms waits made the
                    # log's tree apply a handful of events per transaction.
                    await _wait_held_back(max(held, gather))
                    continue
                held = 0.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll_interval)
                if gather:
                    await asyncio.sleep(gather)


async def _wait_held_back(seconds: float) -> None:
    """A function of its own so that a test can see the waits."""
    await asyncio.sleep(seconds)


async def _held_back(connection: asyncpg.Connection, name: str) -> bool:
    """Whether the log holds an event past `name`'s checkpoint (committed or not yet)."""
    return bool(
        # The first event past the checkpoint, by the (transaction id, position) index: as a
        # plain join the planner scanned the whole log (0.6 s at 1.8M events) every time a
        # projection ran out of events.
        await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM projection_checkpoints c CROSS JOIN LATERAL"
            " (SELECT 1 FROM events e"
            "  WHERE (e.transaction_id, e.position) > (c.transaction_id, c.position)"
            "  ORDER BY e.transaction_id, e.position LIMIT 1) AS first_after"
            " WHERE c.name = $1)",
            name,
        )
    )


async def wait_for_position(
    connection: asyncpg.Connection,
    position: int,
    names: Sequence[str],
    within_seconds: float,
) -> bool | None:
    """True once every named projection has applied the event at `position`; False if they
    have not within the time; None if the log holds no event at that position."""
    target = await connection.fetchval(
        "SELECT transaction_id::text::bigint FROM events WHERE position = $1", position
    )
    if target is None:
        return None
    deadline = time.monotonic() + within_seconds
    while True:
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
