"""The event store: append with optimistic concurrency and idempotency, stream reads,
gap-safe reads of the whole log, and hash-chain verification.

This module alone writes the `events` table. SQL is explicit and runs on the asyncpg
driver connection underneath SQLAlchemy's pool: append and catch-up are the hot paths.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import SESSION_SETTINGS, close_quickly, driver_connection
from app.domain.json_values import inexact_number, loads_exact
from app.events.announce import Announced, Pending, add, announced, payloads
from app.events.hashing import encode_events, event_parts, expected_hash
from app.events.log import (
    AppendResult,
    Checkpoint,
    ClaimedElsewhere,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    VersionConflict,
)
from app.telemetry import APPEND_CONFLICTS, APPEND_SECONDS


@dataclass(frozen=True)
class Break:
    """One event that does not verify: where, and why."""

    stream_id: UUID
    version: int
    reason: str


MAX_BREAKS = 10_000


@dataclass(frozen=True)
class VerifyResult:
    valid: bool
    events_checked: int
    head_hash: str | None
    first_invalid_stream: UUID | None = None
    first_invalid_version: int | None = None
    reason: str | None = None
    breaks: tuple[Break, ...] = ()
    """Every broken link found (the first MAX_BREAKS of `breaks_total`)."""
    breaks_total: int = 0


_COLUMNS = (
    "position, stream_id, version, event_id, type, schema_version, data::text AS data, "
    "metadata::text AS metadata, occurred_at, recorded_at, transaction_id::text::bigint "
    "AS transaction_id, prev_hash, hash"
)

# One round trip before the insert, and reads only: the transaction's first write must be
# the insert itself, so its xid (and thus its place in gap-safe order) follows the head's.
_HEAD_SQL = """
SELECT now() AS now, head.version, head.hash,
       (SELECT coalesce(array_agg(position ORDER BY version), '{}')
          FROM events WHERE stream_id = $1 AND event_id = ANY($2::uuid[])) AS known_positions
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT version, hash FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1
) AS head ON true
"""

# After a lost race: which of our event ids the stream holds already, and the events after
# the version we decided on (one row of NULLs when there are none).
_LOST_RACE_SQL = f"""
SELECT known.positions AS known_positions, later.*
FROM (SELECT coalesce(array_agg(position ORDER BY version), '{{}}') AS positions
        FROM events WHERE stream_id = $1 AND event_id = ANY($2::uuid[])) AS known
LEFT JOIN LATERAL (
    SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND version > $3
) AS later ON true
ORDER BY later.version
"""

_INSERT_SQL = """
INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata,
                    occurred_at, recorded_at, prev_hash, hash)
SELECT $1, version, event_id, type, schema_version, data::jsonb, metadata::jsonb,
       occurred_at, $2, prev_hash, hash
FROM unnest($3::int[], $4::uuid[], $5::text[], $6::int[], $7::text[], $8::text[],
            $9::timestamptz[], $10::bytea[], $11::bytea[])
     AS new(version, event_id, type, schema_version, data, metadata, occurred_at, prev_hash, hash)
ORDER BY version
RETURNING position
"""


# Several streams' events after their known heads, in the order given (positions follow it).
_INSERT_STREAMS_SQL = """
INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata,
                    occurred_at, recorded_at, prev_hash, hash)
SELECT stream_id, version, event_id, type, schema_version, data::jsonb, metadata::jsonb,
       occurred_at, $1, prev_hash, hash
FROM unnest($2::uuid[], $3::int[], $4::uuid[], $5::text[], $6::int[], $7::text[], $8::text[],
            $9::timestamptz[], $10::bytea[], $11::bytea[]) WITH ORDINALITY
     AS new(stream_id, version, event_id, type, schema_version, data, metadata, occurred_at,
            prev_hash, hash, n)
ORDER BY n
RETURNING stream_id, version, position
"""


# One event appended after a known head in one statement, hashed with the database clock:
# the canonical bytes come in pieces ($10, $11, $12) around the recording time's text.
_INSERT_ONE_SQL = """
INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata,
                    occurred_at, recorded_at, prev_hash, hash)
SELECT $1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, coalesce($8::timestamptz, clock.now),
       clock.now, $9::bytea,
       sha256(coalesce($9::bytea, ''::bytea) || $10::bytea || clock.text || $11::bytea
              || CASE WHEN $12::bytea IS NULL THEN ''::bytea ELSE clock.text || $12::bytea END)
FROM (SELECT now() AS now,
             convert_to(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                        'UTF8') AS text) AS clock
RETURNING position, recorded_at, hash
"""


async def _insert(
    connection: asyncpg.Connection,
    stream_id: UUID,
    version: int,
    prev_hash: bytes | None,
    events: Sequence[NewEvent],
    recorded_at: datetime,
) -> AppendResult:
    """Insert `events` after `version`, hash-chained from `prev_hash`, in one statement."""
    encoded = encode_events(stream_id, version, prev_hash, events, recorded_at)
    columns = [list(column) for column in zip(*encoded, strict=True)]
    rows = await connection.fetch(_INSERT_SQL, stream_id, recorded_at, *columns)
    return AppendResult(
        stream_id,
        version + len(events),
        [r["position"] for r in rows],
        recorded_at=recorded_at,
        head_hash=encoded[-1][-1],
        appended=events,
    )


log = logging.getLogger("dealledger.store")
P = ParamSpec("P")
R = TypeVar("R")


def _timed(
    append: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Count an append's time in the append latency histogram (/metrics) and a lost race in
    the conflicts counter, and wake the log's followers once it has committed."""

    @functools.wraps(append)
    async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        try:
            result = await append(*args, **kwargs)
        except VersionConflict:
            APPEND_CONFLICTS.inc()
            raise
        finally:
            APPEND_SECONDS.observe(time.perf_counter() - started)
        store = args[0]  # the store the method was called on: committed, say so
        if isinstance(store, EventStore):
            results = result if isinstance(result, list) else [result]
            store.followers.wake(r for r in results if isinstance(r, AppendResult))
        return result

    return timed


def record_of(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        position=row["position"],
        stream_id=row["stream_id"],
        version=row["version"],
        event_id=row["event_id"],
        type=row["type"],
        schema_version=row["schema_version"],
        data=json.loads(row["data"]),
        metadata=json.loads(row["metadata"]),
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        transaction_id=row["transaction_id"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


class Followers:
    """Wakes whoever LISTENs on `events` (projectors) after appends commit: one NOTIFY at a
    time per process, covering every append made while it was on its way. Its payload
    announces the heads those appends reached and the events that took them there (see
    app.events.announce), for other processes' head caches.

    Not from the appending transaction (a trigger did that until migration 0015): PostgreSQL
    holds its notification queue's lock through the commit's WAL flush, so appends carrying a
    NOTIFY cannot share a flush. Measured with 16 writers: half the appends per second, and
    twice the p99. Nor awaited by the append: that was a second round trip per command (one
    writer at 53 % of a raw INSERT's rate, 97 % without it); it goes out on a pooled
    connection of its own right after. A follower that misses a wake polls anyway (0.5 s)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._due = False
        self._pending: dict[UUID, Pending] = {}
        self._sending: asyncio.Task[None] | None = None

    def wake(self, appended: Iterable[AppendResult] = ()) -> None:
        """A NOTIFY goes out soon after this call (the caller does not wait for it)."""
        self._due = True
        for result in appended:
            add(self._pending, result)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def settled(self) -> None:
        """Returns once no NOTIFY is on its way (before the engine is disposed of)."""
        while self._sending is not None and not self._sending.done():
            await asyncio.shield(self._sending)

    async def _send(self) -> None:
        while self._due:
            self._due = False
            pending, self._pending = self._pending, {}
            try:
                texts = payloads(pending)
                async with driver_connection(self.engine) as connection:
                    if texts:  # in order, in one round trip
                        await connection.execute(
                            "SELECT pg_notify('events', p) FROM unnest($1::text[]) AS p", texts
                        )
                    else:
                        await connection.execute("NOTIFY events")
            except Exception as error:  # followers poll; an outage is reported elsewhere
                log.debug("could not wake the log's followers: %s", error)
                return


async def listen_for_heads(
    dsn: str, on_heard: Callable[[list[Announced]], None], retry_seconds: float = 1.0
) -> None:
    """Hear what every process's appends announce, until cancelled (reconnecting when the
    connection is lost: what was missed meanwhile costs conflicts, not answers)."""

    def heard(_: object, __: int, ___: str, payload: str) -> None:
        if payload:
            on_heard(announced(payload))

    while True:
        try:
            await _listen_until_lost(dsn, heard)
        except Exception as error:  # an outage: it costs conflicts meanwhile, not answers
            log.debug("cannot listen for heads: %s", error)
        await asyncio.sleep(retry_seconds)


async def _listen_until_lost(dsn: str, heard: Callable[[object, int, str, str], None]) -> None:
    connection = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    lost = asyncio.Event()
    try:
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener("events", heard)
        await lost.wait()
    finally:
        await close_quickly(connection)


class EventStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.followers = Followers(engine)

    @_timed
    async def append(
        self,
        stream_id: UUID,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        recorded_at: datetime | None = None,
    ) -> AppendResult:
        """Append all events or none.

        `expected_version` is the version the caller decided on (0 for a new stream; None
        skips the check). A stale one raises VersionConflict. Events whose ids the stream
        already holds are not written again: the original positions come back instead.
        `recorded_at` replaces the database clock; only simulated history (the demo and
        benchmark generator) sets it, never the HTTP API.
        """
        if not events:
            raise ValueError("append needs at least one event")
        event_ids = [event.event_id for event in events]
        if len(set(event_ids)) != len(event_ids):
            raise ValueError("event ids within one append must be distinct")
        async with driver_connection(self.engine) as connection:
            try:
                async with connection.transaction():
                    return await self._append_in_transaction(
                        connection, stream_id, expected_version, events, recorded_at
                    )
            except asyncpg.UniqueViolationError:
                # A concurrent append won the race: either it wrote these very events
                # (an idempotent retry) or it took the version we wanted.
                return await self._after_lost_race(connection, stream_id, expected_version, events)

    async def _append_in_transaction(
        self,
        connection: asyncpg.Connection,
        stream_id: UUID,
        expected_version: int | None,
        events: Sequence[NewEvent],
        simulated_at: datetime | None = None,
    ) -> AppendResult:
        head = await connection.fetchrow(_HEAD_SQL, stream_id, [e.event_id for e in events])
        current_version: int = head["version"] or 0
        if head["known_positions"]:
            return AppendResult(stream_id, current_version, list(head["known_positions"]), True)
        if expected_version is not None and expected_version != current_version:
            raise VersionConflict(stream_id, expected_version, current_version)
        recorded_at: datetime = simulated_at or head["now"]
        return await _insert(
            connection, stream_id, current_version, head["hash"], events, recorded_at
        )

    @_timed
    async def append_at_head(
        self,
        stream_id: UUID,
        version: int,
        head_hash: bytes | None,
        events: Sequence[NewEvent],
        *,
        recorded_at: datetime | None = None,
        claims: Sequence[UUID] = (),
    ) -> AppendResult:
        """Append after a head the caller already knows (the stream's version and last hash),
        in one INSERT: the (stream, version) unique key is the concurrency check, so a stale
        head raises VersionConflict and nothing is written. Two round trips (the database
        clock, then the insert) where `append` needs a transaction of four.

        `claims`: ids of these events that must be unique across the whole log (ingested
        CloudEvents); claimed in the same transaction, so if another stream holds one, nothing
        is written and ClaimedElsewhere names them."""
        if not events:
            raise ValueError("append needs at least one event")
        if claims:
            return await self._append_claiming(stream_id, version, head_hash, events, claims)
        if len(events) == 1 and recorded_at is None:
            return await self._append_one(stream_id, version, head_hash, events[0])
        async with driver_connection(self.engine) as connection:
            if recorded_at is None:
                recorded_at = await connection.fetchval("SELECT now()")
            assert recorded_at is not None
            try:
                # A single statement is its own transaction, and its first write is the
                # insert: gap-safe readers order it like any other append.
                return await _insert(connection, stream_id, version, head_hash, events, recorded_at)
            except asyncpg.UniqueViolationError:
                return await self._after_lost_race(connection, stream_id, version, events)

    @_timed
    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Several streams' appends after their known heads in one transaction: one INSERT
        for all their events and one claim of their CloudEvent ids (a batch of ingested
        events in three round trips, not a transaction per deal). All or nothing."""
        if not appends:
            return []
        async with driver_connection(self.engine) as connection:
            try:
                async with connection.transaction():
                    recorded_at = await connection.fetchval("SELECT now()")
                    columns: list[list[Any]] = [[] for _ in range(10)]
                    heads: dict[UUID, bytes] = {}
                    for part in appends:
                        encoded = encode_events(
                            part.stream_id, part.version, part.head_hash, part.events, recorded_at
                        )
                        for row in encoded:
                            columns[0].append(part.stream_id)
                            for column, value in zip(columns[1:], row, strict=True):
                                column.append(value)
                        heads[part.stream_id] = encoded[-1][-1]
                    # The event insert is the transaction's first write (gap-safe order).
                    rows = await connection.fetch(_INSERT_STREAMS_SQL, recorded_at, *columns)
                    at = {(r["stream_id"], r["version"]): r["position"] for r in rows}
                    # Claimed in id order: two batches claiming the same ids wait on each
                    # other in one order, never in a circle.
                    claims = sorted(
                        (claim, part.stream_id, at[(part.stream_id, part.version + offset)])
                        for part in appends
                        for offset, event in enumerate(part.events, 1)
                        for claim in part.claims
                        if event.event_id == claim
                    )
                    if claims:
                        ids, streams, positions = (list(c) for c in zip(*claims, strict=True))
                        won = await connection.fetch(
                            "INSERT INTO cloudevent_ids (event_id, stream_id, position)"
                            " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[])"
                            " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                            ids,
                            streams,
                            positions,
                        )
                        lost = set(ids) - {row["event_id"] for row in won}
                        if lost:
                            raise ClaimedElsewhere(sorted(lost))
            except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError) as error:
                # Some head moved on (or an event id is in its stream already), or a batch
                # racing for the same heads or ids in another order met this one in a
                # deadlock: nothing was written; the caller sorts it out stream by stream.
                raise VersionConflict(appends[0].stream_id, appends[0].version, -1) from error
        return [
            AppendResult(
                part.stream_id,
                part.version + len(part.events),
                [at[(part.stream_id, part.version + n)] for n in range(1, len(part.events) + 1)],
                recorded_at=recorded_at,
                head_hash=heads[part.stream_id],
                appended=part.events,
            )
            for part in appends
        ]

    async def _append_claiming(
        self,
        stream_id: UUID,
        version: int,
        head_hash: bytes | None,
        events: Sequence[NewEvent],
        claims: Sequence[UUID],
    ) -> AppendResult:
        async with driver_connection(self.engine) as connection:
            try:
                async with connection.transaction():
                    recorded_at = await connection.fetchval("SELECT now()")
                    # The event insert is the transaction's first write (gap-safe order).
                    result = await _insert(
                        connection, stream_id, version, head_hash, events, recorded_at
                    )
                    by_id = dict(zip((e.event_id for e in events), result.positions, strict=True))
                    # ON CONFLICT waits for a concurrent claimant to commit or roll back; in
                    # id order, as a batch claims (no two claimants wait in a circle).
                    claims = sorted(claims)
                    won = await connection.fetch(
                        "INSERT INTO cloudevent_ids (event_id, stream_id, position)"
                        " SELECT unnest($1::uuid[]), $2, unnest($3::bigint[])"
                        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                        list(claims),
                        stream_id,
                        [by_id[claim] for claim in claims],
                    )
                    lost = set(claims) - {row["event_id"] for row in won}
                    if lost:
                        raise ClaimedElsewhere(sorted(lost))
            except asyncpg.UniqueViolationError:
                return await self._after_lost_race(connection, stream_id, version, events)
        return result

    async def _append_one(
        self, stream_id: UUID, version: int, head_hash: bytes | None, event: NewEvent
    ) -> AppendResult:
        data_text, metadata_text, parts = event_parts(stream_id, version + 1, event)
        async with driver_connection(self.engine) as connection:
            try:
                row = await connection.fetchrow(
                    _INSERT_ONE_SQL,
                    stream_id,
                    version + 1,
                    event.event_id,
                    event.type,
                    event.schema_version,
                    data_text,
                    metadata_text,
                    event.occurred_at,
                    head_hash,
                    parts[0],
                    parts[1],
                    parts[2] if len(parts) > 2 else None,
                )
            except asyncpg.UniqueViolationError:
                return await self._after_lost_race(connection, stream_id, version, [event])
        return AppendResult(
            stream_id,
            version + 1,
            [row["position"]],
            recorded_at=row["recorded_at"],
            head_hash=row["hash"],
            appended=(event,),
        )

    async def _after_lost_race(
        self,
        connection: asyncpg.Connection,
        stream_id: UUID,
        expected_version: int | None,
        events: Sequence[NewEvent],
    ) -> AppendResult:
        ids = [e.event_id for e in events]
        if expected_version is None:
            head = await connection.fetchrow(_HEAD_SQL, stream_id, ids)
            if head["known_positions"]:
                positions = list(head["known_positions"])
                return AppendResult(stream_id, head["version"] or 0, positions, True)
            raise VersionConflict(stream_id, expected_version, head["version"] or 0)
        # The events the caller missed come back in the same round trip: with several
        # processes most conflicts are a stale cached head, caught up without another read.
        rows = await connection.fetch(_LOST_RACE_SQL, stream_id, ids, expected_version)
        missed = [record_of(row) for row in rows if row["position"] is not None]
        current_version = missed[-1].version if missed else expected_version
        if rows[0]["known_positions"]:
            return AppendResult(stream_id, current_version, list(rows[0]["known_positions"]), True)
        raise VersionConflict(stream_id, expected_version, current_version, missed)

    async def stream_version(self, stream_id: UUID) -> int:
        async with driver_connection(self.engine) as connection:
            version = await connection.fetchval(
                "SELECT max(version) FROM events WHERE stream_id = $1", stream_id
            )
        return int(version or 0)

    async def read_stream(
        self,
        stream_id: UUID,
        *,
        up_to_version: int | None = None,
        up_to_position: int | None = None,
        recorded_up_to: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]:
        """The stream's events in version order, optionally cut at a version, position or
        time, from after `after_version`."""
        async with driver_connection(self.engine) as connection:
            return await read_stream_on(
                connection,
                stream_id,
                up_to_version=up_to_version,
                up_to_position=up_to_position,
                recorded_up_to=recorded_up_to,
                after_version=after_version,
            )

    async def pipeline_keys(self) -> list[str]:
        """The keys of every pipeline with a version in the log (a partial index holds just
        the pipeline events)."""
        async with driver_connection(self.engine) as connection:
            rows = await connection.fetch(
                "SELECT DISTINCT data->'pipeline'->>'key' AS key FROM events"
                " WHERE type = 'PipelineVersionDefined' ORDER BY 1"
            )
        return [row["key"] for row in rows]

    async def find_events(
        self, event_ids: Sequence[UUID], *, stream_id: UUID | None = None
    ) -> dict[UUID, tuple[UUID, int]]:
        """Where events with these ids were stored (see EventLog.find_events). Across streams
        the claims table answers: the log keeps no index on event_id alone, whose random
        keys made every append read and dirty a random page of it (at 4.9M events a single
        append's p99 went 1.1 -> 2-4 ms; without it, 1.1 ms as on a small log)."""
        async with driver_connection(self.engine) as connection:
            if stream_id is None:
                rows = await connection.fetch(
                    "SELECT event_id, stream_id, position FROM cloudevent_ids"
                    " WHERE event_id = ANY($1::uuid[])",
                    list(event_ids),
                )
            else:
                rows = await connection.fetch(
                    "SELECT event_id, stream_id, position FROM events"
                    " WHERE stream_id = $1 AND event_id = ANY($2::uuid[])",
                    stream_id,
                    list(event_ids),
                )
        return {r["event_id"]: (r["stream_id"], r["position"]) for r in rows}

    async def read_all(self, after: Checkpoint, limit: int = 1000) -> list[RecordedEvent]:
        """The next committed events after `after`, gap-safely.

        Only rows of transactions older than every transaction still running are returned
        (that set can no longer change), ordered by (transaction id, position): checkpoint
        that pair, never position alone.
        """
        async with driver_connection(self.engine) as connection:
            rows = await read_all_on(connection, after, limit)
        return [record_of(row) for row in rows]

    async def verify(
        self, stream_id: UUID | None = None, on_progress: Callable[[int], None] | None = None
    ) -> VerifyResult:
        """Walk one stream (or every stream) and report every broken link."""
        checked, total = 0, 0
        head_hash: bytes | None = None
        breaks: list[Break] = []
        async with aclosing(self._walk(stream_id)) as walk:
            async for event, ok, reason in walk:
                checked += 1
                if on_progress is not None:
                    on_progress(checked)
                head_hash = event.hash
                if not ok:
                    total += 1
                    if len(breaks) < MAX_BREAKS:
                        breaks.append(Break(event.stream_id, event.version, reason or ""))
        if breaks:
            first = breaks[0]
            return VerifyResult(
                False, checked, None, first.stream_id, first.version, first.reason,
                tuple(breaks), total,
            )  # fmt: skip
        return VerifyResult(True, checked, head_hash.hex() if head_hash else None)

    async def count(self, stream_id: UUID | None = None) -> int:
        async with driver_connection(self.engine) as connection:
            total = await connection.fetchval(
                "SELECT count(*) FROM events WHERE ($1::uuid IS NULL OR stream_id = $1)",
                stream_id,
            )
        return int(total)

    async def _walk(
        self, stream_id: UUID | None
    ) -> AsyncGenerator[tuple[RecordedEvent, bool, str | None]]:
        async with driver_connection(self.engine) as connection, connection.transaction():
            cursor = connection.cursor(
                f"SELECT {_COLUMNS} FROM events"
                " WHERE ($1::uuid IS NULL OR stream_id = $1) ORDER BY stream_id, version",
                stream_id,
                prefetch=2000,
            )
            previous: RecordedEvent | None = None
            async for row in cursor:
                event = record_of(row)
                if previous is not None and previous.stream_id != event.stream_id:
                    previous = None
                ok, reason = _check_link(previous, event)
                if ok and (reason := _inexact_number(row)) is not None:
                    ok = False
                yield event, ok, reason
                previous = event


def _check_link(previous: RecordedEvent | None, event: RecordedEvent) -> tuple[bool, str | None]:
    expected_version = previous.version + 1 if previous else 1
    if event.version != expected_version:
        return False, f"version {event.version} follows {expected_version - 1}"
    expected_prev = previous.hash if previous else None
    if event.prev_hash != expected_prev:
        return False, "prev_hash does not match the previous event's hash"
    if event.hash != expected_hash(event, expected_prev):
        return False, "content does not match its hash"
    return True, None


def _inexact_number(row: asyncpg.Record) -> str | None:
    """A number no double holds hashes as its nearest double, so an edit to one would pass
    the hash check; the service never stores one, so finding one is finding an edit."""
    for column in ("data", "metadata"):
        if (found := inexact_number(loads_exact(row[column]), column)) is not None:
            return f"{found} (the service never stores such a number)"
    return None


# Ordered by the table's columns (not the bigint alias in _COLUMNS), so each page is a range
# of the (transaction_id, position) index, not a sort of the rest of the log.
READ_ALL_SQL = (
    f"SELECT {_COLUMNS} FROM events"
    " WHERE (transaction_id, position) > ($1::text::xid8, $2)"
    " AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
    " ORDER BY events.transaction_id, events.position LIMIT $3"
)

# Events between two gap-safe checkpoints (both already read past), from a position on.
READ_THROUGH_SQL = (
    f"SELECT {_COLUMNS} FROM events"
    " WHERE (transaction_id, position) > ($1::text::xid8, $2)"
    " AND (transaction_id, position) <= ($3::text::xid8, $4) AND position >= $5"
    " ORDER BY events.transaction_id, events.position LIMIT $6"
)


async def read_all_on(
    connection: asyncpg.Connection, after: Checkpoint, limit: int
) -> list[asyncpg.Record]:
    """Gap-safe page of the log on an existing connection (see EventStore.read_all)."""
    rows: list[asyncpg.Record] = await connection.fetch(
        READ_ALL_SQL,
        str(after.transaction_id),
        after.position,
        limit,
    )
    return rows


async def read_stream_on(
    connection: asyncpg.Connection,
    stream_id: UUID,
    *,
    up_to_version: int | None = None,
    up_to_position: int | None = None,
    recorded_up_to: datetime | None = None,
    after_version: int = 0,
) -> list[RecordedEvent]:
    """A stream's events in version order on an existing connection (see read_stream)."""
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND version > $5"
        " AND ($2::int IS NULL OR version <= $2)"
        " AND ($3::bigint IS NULL OR position <= $3)"
        " AND ($4::timestamptz IS NULL OR recorded_at <= $4)"
        " ORDER BY version",
        stream_id,
        up_to_version,
        up_to_position,
        recorded_up_to,
        after_version,
    )
    return [record_of(row) for row in rows]


def checkpoint_of(event: RecordedEvent) -> Checkpoint:
    return Checkpoint(event.transaction_id, event.position)


async def streams_after(connection: asyncpg.Connection, checkpoint: Checkpoint) -> dict[UUID, int]:
    """The streams with events after a gap-safe checkpoint (those a projection standing there
    has not applied), each with the position of its first event."""
    rows = await connection.fetch(
        "SELECT stream_id, (SELECT min(position) FROM events f WHERE f.stream_id = a.stream_id)"
        " AS first FROM (SELECT DISTINCT stream_id FROM events"
        "  WHERE (transaction_id, position) > ($1::text::xid8, $2)) a",
        str(checkpoint.transaction_id),
        checkpoint.position,
    )
    return {r["stream_id"]: r["first"] for r in rows}


async def read_streams_through(
    connection: asyncpg.Connection, through: dict[UUID, int]
) -> list[RecordedEvent]:
    """Each given stream's events up to the given version, stream by stream in order."""
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM events"
        " JOIN unnest($1::uuid[], $2::int[]) AS wanted(wanted_stream, through)"
        " ON events.stream_id = wanted.wanted_stream AND events.version <= wanted.through"
        " ORDER BY events.stream_id, events.version",
        list(through),
        list(through.values()),
    )
    return [record_of(row) for row in rows]
