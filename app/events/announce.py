"""What a NOTIFY on `events` announces after appends commit: the head each stream reached,
and, where they fit, the events that took it there. Another process folds those onto the
head it has cached instead of reading the deal again before its next command on it.

Measured with two API processes sharing every deal: a read before nearly every command (a
second round trip, ~385 us of Python and PostgreSQL), against ~20 us to parse and fold a
heard event. Pure: encoding and decoding only; `Followers` sends, `HeadCache` folds.

A payload is lines, one per stream: `<stream hex>:<version>` (the head only), or
`<stream hex>:<version>:<head hash hex> <JSON>`, the JSON an array of the events ending at
that version, each `[type, schema_version, occurred_at, recorded_at, data]`. A payload
stays under PostgreSQL's 8000 bytes: further lines go in further NOTIFYs, and a stream whose
events alone would not fit announces its head only (hearers read on, as before).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from app.events.log import AppendResult, NewEvent

MAX_PAYLOAD = 7_900  # bytes; PostgreSQL refuses 8000 and more
_ENCODE = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class HeardEvent:
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class Announced:
    """One stream's head as announced, and the events up to it when they came along (their
    JSON kept as text until a hearer has the head before them cached)."""

    stream_id: UUID
    version: int
    head_hash: bytes | None = None
    events_json: str | None = None

    def events(self) -> list[HeardEvent] | None:
        """The events ending at `version`, oldest first (None: only the head was announced).
        Raises ValueError (or TypeError, KeyError) on a payload this process cannot read."""
        if self.events_json is None:
            return None
        items = json.loads(self.events_json)
        first = self.version - len(items) + 1
        return [
            HeardEvent(
                first + offset,
                str(type_),
                int(schema_version),
                data,
                datetime.fromisoformat(occurred),
                datetime.fromisoformat(recorded),
            )
            for offset, (type_, schema_version, occurred, recorded, data) in enumerate(items)
        ]


@dataclass
class Pending:
    """What one process appended to one stream since its last NOTIFY: the head it reached,
    and the events that led there (None once appends out of order left them incomplete)."""

    version: int
    head_hash: bytes | None
    events: list[tuple[NewEvent, datetime]] | None


def add(pending: dict[UUID, Pending], result: AppendResult) -> None:
    """Count one committed append (the events it wrote) into what is to be announced."""
    if result.duplicate or result.recorded_at is None:
        return
    events = result.appended
    before = result.stream_version - len(events)  # the head these events were appended to
    new = [(event, result.recorded_at) for event in events]
    known = pending.get(result.stream_id)
    if known is None or before > known.version:
        # The first append to announce, or one after a gap (another process appended in
        # between): a hearer needs the head before these events anyway.
        pending[result.stream_id] = Pending(result.stream_version, result.head_hash, new)
    elif result.stream_version > known.version:
        if known.events is not None and before == known.version:
            known.events.extend(new)
        else:
            known.events = None
        known.version, known.head_hash = result.stream_version, result.head_hash


def _line(stream_id: UUID, item: Pending) -> bytes:
    head = f"{stream_id.hex}:{item.version}".encode()
    if not item.events or item.head_hash is None:
        return head
    parts = []
    try:
        # One C-speed encode per event (stdlib dumps of its times and data were a thirteenth
        # of a batch ingest); times in UTC, as a read of the log gives them.
        for event, recorded_at in item.events:
            recorded = recorded_at.astimezone(UTC)
            occurred = recorded if event.occurred_at is None else event.occurred_at.astimezone(UTC)
            parts.append(
                _ENCODE([event.type, event.schema_version, occurred, recorded, event.data])
            )
    except (TypeError, ValueError):  # stored, so encodable; if not, hearers read on
        return head
    line = b"%s:%s [%s]" % (head, item.head_hash.hex().encode(), b",".join(parts))
    return line if len(line) <= MAX_PAYLOAD else head


def payloads(pending: dict[UUID, Pending]) -> list[str]:
    """The NOTIFY payloads announcing `pending`, each under MAX_PAYLOAD bytes."""
    out: list[str] = []
    current: list[bytes] = []
    size = 0
    for stream_id, item in pending.items():
        line = _line(stream_id, item)
        length = len(line) + 1
        if current and size + length > MAX_PAYLOAD:
            out.append(b"\n".join(current).decode())
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        out.append(b"\n".join(current).decode())
    return out


def announced(payload: str) -> list[Announced]:
    """What a payload announced, line by line (a line this process cannot read is skipped:
    a missed announcement costs a read, never an answer)."""
    out = []
    for line in payload.split("\n"):
        head, _, events_json = line.partition(" ")
        stream, _, rest = head.partition(":")
        version, _, head_hash = rest.partition(":")
        try:
            out.append(
                Announced(
                    UUID(hex=stream),
                    int(version),
                    bytes.fromhex(head_hash) if head_hash else None,
                    (events_json or None) if head_hash else None,
                )
            )
        except ValueError:
            continue
    return out
