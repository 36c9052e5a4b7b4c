"""From a stored row to the event the domain folds."""

from __future__ import annotations

from app.domain.events import parse_event
from app.domain.state import Recorded
from app.events.log import RecordedEvent


def to_recorded(event: RecordedEvent) -> Recorded:
    return Recorded(
        event=parse_event(event.type, event.schema_version, event.data),
        version=event.version,
        occurred_at=event.occurred_at,
        recorded_at=event.recorded_at,
    )
