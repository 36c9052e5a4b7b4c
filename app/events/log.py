"""The log's vocabulary: what is appended, what is read back, where a reader stands, and
the `EventLog` protocol that the PostgreSQL store (and the tests' in-memory one) satisfy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID, uuid4


@dataclass(frozen=True)
class NewEvent:
    """An event to append; `occurred_at` defaults to the time it is recorded."""

    type: str
    data: dict[str, Any]
    event_id: UUID = field(default_factory=uuid4)
    schema_version: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class RecordedEvent:
    position: int
    stream_id: UUID
    version: int
    event_id: UUID
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    transaction_id: int
    prev_hash: bytes | None
    hash: bytes


@dataclass(frozen=True)
class AppendResult:
    stream_id: UUID
    stream_version: int
    positions: list[int]
    duplicate: bool = False
    recorded_at: datetime | None = None
    head_hash: bytes | None = None
    """The hash of the stream's new last event (unset for a duplicate)."""
    appended: Sequence[NewEvent] = ()
    """The events this append wrote (announced to other processes once committed)."""

    @property
    def last_position(self) -> int:
        return max(self.positions)


@dataclass(frozen=True, order=True)
class Checkpoint:
    """Where a gap-safe reader stands: the (transaction id, position) of its last event."""

    transaction_id: int = 0
    position: int = 0


class VersionConflict(Exception):
    """The stream moved on since the caller read it: re-read and decide again."""

    def __init__(
        self,
        stream_id: UUID,
        expected_version: int | None,
        actual_version: int,
        missed: list[RecordedEvent] | None = None,
    ) -> None:
        super().__init__(
            f"stream {stream_id} is at version {actual_version}, expected {expected_version}"
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        self.missed = missed
        """The events after `expected_version` when the conflict was found, when read with
        it: the caller catches up on them without reading the stream again."""


class ClaimedElsewhere(Exception):
    """Ids that must be unique across the log are already held by another stream."""

    def __init__(self, event_ids: list[UUID]) -> None:
        super().__init__(f"already stored elsewhere: {', '.join(map(str, event_ids))}")
        self.event_ids = event_ids


@dataclass(frozen=True)
class StreamAppend:
    """One stream's part of a multi-stream append: after its known head, with the ids that
    must be unique across the log (ingested CloudEvents)."""

    stream_id: UUID
    version: int
    head_hash: bytes | None
    events: Sequence[NewEvent]
    claims: Sequence[UUID] = ()


class EventLog(Protocol):
    """An append-only log of deal streams: what the service layer needs of a store."""

    async def append(
        self,
        stream_id: UUID,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        recorded_at: datetime | None = None,
    ) -> AppendResult:
        """All events or none, after `expected_version` (None: no check); a stale version
        raises VersionConflict; event ids the stream holds come back as a duplicate."""
        ...

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
        """`append` after a head the caller knows (version and last hash); `claims` are ids
        that must be unique across every stream (else ClaimedElsewhere, nothing written)."""
        ...

    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[AppendResult]:
        """Several `append_at_head`s in one transaction, all or nothing: VersionConflict
        when any head is stale, ClaimedElsewhere when a claimed id is held elsewhere."""
        ...

    async def read_stream(
        self,
        stream_id: UUID,
        *,
        up_to_version: int | None = None,
        up_to_position: int | None = None,
        recorded_up_to: datetime | None = None,
        after_version: int = 0,
    ) -> list[RecordedEvent]: ...

    async def pipeline_keys(self) -> list[str]:
        """The keys of every pipeline with a version in the log."""
        ...

    async def find_events(
        self, event_ids: Sequence[UUID], *, stream_id: UUID | None = None
    ) -> dict[UUID, tuple[UUID, int]]:
        """Where events with these ids were stored: id -> (stream, position). In `stream_id`'s
        stream; or, with None, in any stream among ingested CloudEvents (their ids are claimed
        log-wide, the only ids looked up across streams)."""
        ...

    async def read_all(self, after: Checkpoint, limit: int = 1000) -> list[RecordedEvent]:
        """The next committed events after `after`, in gap-safe order."""
        ...
