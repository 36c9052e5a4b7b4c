"""An in-memory EventLog, for fast tests of what sits above the store. Tests only.

It keeps the PostgreSQL store's promises that the service relies on: all-or-nothing appends
after an expected version (a stale one is a VersionConflict), event ids unique within a
stream (a repeat answers as a duplicate with the original positions), the same hash chain,
and reads in version order. One process, no concurrency: positions are also the gap-safe
order, so a checkpoint's transaction id is its position.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from uuid import UUID

from app.events.hashing import encode_events
from app.events.log import (
    AppendResult,
    Checkpoint,
    ClaimedElsewhere,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    VersionConflict,
)


class InMemoryEventStore:
    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.events: list[RecordedEvent] = []
        self._streams: dict[UUID, list[RecordedEvent]] = {}
        self.claimed: dict[UUID, tuple[UUID, int]] = {}
        """Ids unique across the whole log (ingested CloudEvents): id -> (stream, position)."""
        self.appends = 0
        """How many appends wrote something (a test can tell a write from a no-op)."""

    def _known(self, stream_id: UUID, events: Sequence[NewEvent]) -> list[int]:
        ids = {event.event_id for event in events}
        return [e.position for e in self._streams.get(stream_id, []) if e.event_id in ids]

    async def append(
        self,
        stream_id: UUID,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        recorded_at: datetime | None = None,
    ) -> AppendResult:
        if not events:
            raise ValueError("append needs at least one event")
        if len({event.event_id for event in events}) != len(events):
            raise ValueError("event ids within one append must be distinct")
        stream = self._streams.get(stream_id, [])
        version = stream[-1].version if stream else 0
        if known := self._known(stream_id, events):
            return AppendResult(stream_id, version, known, duplicate=True)
        if expected_version is not None and expected_version != version:
            raise VersionConflict(stream_id, expected_version, version)
        return self._write(
            stream_id, version, stream[-1].hash if stream else None, events, recorded_at
        )

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
        # The (stream, version) key is the check: the head the caller knows must be the head.
        stream = self._streams.get(stream_id, [])
        current = stream[-1].version if stream else 0
        if current != version:
            if known := self._known(stream_id, events):
                return AppendResult(stream_id, current, known, duplicate=True)
            missed = [event for event in stream if event.version > version]
            raise VersionConflict(stream_id, version, current, missed)
        if lost := sorted(claim for claim in claims if claim in self.claimed):
            raise ClaimedElsewhere(lost)
        result = await self.append(stream_id, version, events, recorded_at=recorded_at)
        by_id = dict(zip((event.event_id for event in events), result.positions, strict=True))
        self.claimed.update({claim: (stream_id, by_id[claim]) for claim in claims})
        return result

    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        for part in appends:  # all or nothing: check every head and claim first
            stream = self._streams.get(part.stream_id, [])
            current = stream[-1].version if stream else 0
            if current != part.version:
                raise VersionConflict(part.stream_id, part.version, current)
            if lost := sorted(claim for claim in part.claims if claim in self.claimed):
                raise ClaimedElsewhere(lost)
        return [
            await self.append_at_head(
                part.stream_id, part.version, part.head_hash, part.events, claims=part.claims
            )
            for part in appends
        ]

    def _write(
        self,
        stream_id: UUID,
        version: int,
        prev_hash: bytes | None,
        events: Sequence[NewEvent],
        recorded_at: datetime | None,
    ) -> AppendResult:
        at = recorded_at or self.clock()
        rows = encode_events(stream_id, version, prev_hash, events, at)
        written = []
        for row in rows:
            (version_, event_id, type_, schema, data, metadata, occurred, prev, digest) = row
            position = len(self.events) + 1
            written.append(
                RecordedEvent(
                    position=position,
                    stream_id=stream_id,
                    version=version_,
                    event_id=event_id,
                    type=type_,
                    schema_version=schema,
                    data=json.loads(data),
                    metadata=json.loads(metadata),
                    occurred_at=occurred,
                    recorded_at=at,
                    transaction_id=position,
                    prev_hash=prev,
                    hash=digest,
                )
            )
        self.events += written
        self._streams.setdefault(stream_id, []).extend(written)
        self.appends += 1
        return AppendResult(
            stream_id,
            version + len(events),
            [event.position for event in written],
            recorded_at=at,
            head_hash=written[-1].hash,
        )

    async def read_stream(
        self,
        stream_id: UUID,
        *,
        up_to_version: int | None = None,
        up_to_position: int | None = None,
        recorded_up_to: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]:
        return [
            event
            for event in self._streams.get(stream_id, [])
            if event.version > after_version
            and (up_to_version is None or event.version <= up_to_version)
            and (up_to_position is None or event.position <= up_to_position)
            and (recorded_up_to is None or event.recorded_at <= recorded_up_to)
        ]

    async def pipeline_keys(self) -> list[str]:
        return sorted(
            {e.data["pipeline"]["key"] for e in self.events if e.type == "PipelineVersionDefined"}
        )

    async def find_events(
        self, event_ids: Sequence[UUID], *, stream_id: UUID | None = None
    ) -> dict[UUID, tuple[UUID, int]]:
        wanted = set(event_ids)
        found: dict[UUID, tuple[UUID, int]] = {}
        for event in self.events:
            if stream_id is not None and event.stream_id != stream_id:
                continue
            if event.event_id in wanted and event.event_id not in found:
                found[event.event_id] = (event.stream_id, event.position)
        return found

    async def read_all(self, after: Checkpoint, limit: int = 1000) -> list[RecordedEvent]:
        return [e for e in self.events if e.position > after.position][:limit]
