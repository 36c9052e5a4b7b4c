"""CloudEvents from other systems, turned into deal commands. Pure: no I/O here.

(`source`, `id`) is a CloudEvent's permanent identity, so the event id we store is derived
from it: the same CloudEvent posted again, now or a month later, maps to the same event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import unquote
from uuid import UUID

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from app.domain import commands as c
from app.domain.errors import (
    DealNotFound,
    EventTooLarge,
    InvalidCloudEvent,
    OccurredInFuture,
    UnknownEventType,
)
from app.domain.events import EvidenceSource, ExternalRef
from app.domain.identifiers import (
    cloudevent_event_id,
    cloudevent_evidence_id,
    deal_id_for_external_ref,
)
from app.domain.json_values import checked_size, loads_exact, unsafe_json
from app.domain.pipeline import ACTIVITY_TYPES
from app.domain.time_bounds import bounded_time, time_problem
from app.settings import DEFAULT_MAX_EVENT_BYTES

ACTIVITY_PREFIX = "com.dealledger.activity."
EVIDENCE_TYPE = "com.dealledger.evidence.recorded"
SUPPORTED_TYPES = (*(ACTIVITY_PREFIX + kind for kind in ACTIVITY_TYPES), EVIDENCE_TYPE)
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MAX_BATCH = 1000
Short = Annotated[str, Field(min_length=1, max_length=200)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deal_ref: ExternalRef | None = None


class ActivityData(_Data):
    """`data` of an activity CloudEvent: the deal reference, plus any details kept as sent."""

    model_config = ConfigDict(extra="allow")


class EvidenceData(_Data):
    kind: Short
    criteria: Annotated[list[Short], Field(min_length=1, max_length=20)]
    summary: Annotated[str, Field(min_length=1, max_length=2000)]
    occurred_at: Annotated[AwareDatetime, AfterValidator(bounded_time)] | None = None
    source: EvidenceSource | None = None


@dataclass(frozen=True)
class Envelope:
    """What we keep of the CloudEvent itself, in the stored event's metadata."""

    source: str
    id: str
    type: str
    time: datetime | None
    subject: str | None

    def metadata(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "id": self.id,
            "type": self.type,
            "time": self.time.isoformat() if self.time else None,
            "subject": self.subject,
        }


@dataclass(frozen=True)
class Ingestible:
    """A CloudEvent ready for the service: which deal, which command, which event id."""

    envelope: Envelope
    deal_id: UUID
    command: c.Command
    event_id: UUID
    deal_ref: ExternalRef | None = None
    """How the sender named the deal, when by its external reference (for problems)."""

    def unknown_deal(self) -> DealNotFound:
        """The problem for a deal nobody opened, in the sender's own terms."""
        if self.deal_ref is not None and not self.envelope.subject:
            ref = self.deal_ref
            return DealNotFound(
                f"no deal was opened with external_ref source={ref.source!r} id={ref.id!r}",
                deal_ref={"source": ref.source, "id": ref.id},
            )
        return DealNotFound(f"deal {self.deal_id} does not exist")


def identity_of(raw: Any) -> tuple[str | None, str | None]:
    """(source, id) of a raw item as far as it has them, for results about bad items."""
    if not isinstance(raw, dict):
        return None, None
    source, ce_id = raw.get("source"), raw.get("id")
    # Text that cannot be encoded (a lone surrogate) is not echoed back.
    return (
        source if isinstance(source, str) and unsafe_json(source) is None else None,
        ce_id if isinstance(ce_id, str) and unsafe_json(ce_id) is None else None,
    )


def from_binary(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """A binary-mode CloudEvent (attributes as `ce-*` headers, the data as the body) in the
    structured form `parse` reads. Knative and other brokers deliver this way by default."""
    attributes: dict[str, Any] = {
        name.removeprefix("ce-"): unquote(value)
        for name, value in headers.items()
        if name.lower().startswith("ce-")
    }
    content_type = headers.get("content-type", "application/json")
    if content_type.split(";")[0].strip().lower() not in ("application/json", ""):
        raise InvalidCloudEvent(f"binary-mode data must be application/json, not {content_type}")
    if body.strip():
        try:
            attributes["data"] = loads_exact(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidCloudEvent("binary-mode data (the body) is not valid JSON") from None
    return attributes


def parse(
    raw: Any,
    received_at: datetime,
    max_clock_skew: timedelta = timedelta(seconds=300),
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> Ingestible:
    """One structured-mode CloudEvent (decoded by `loads_exact`) -> what to do, or a
    DomainError: InvalidCloudEvent, OccurredInFuture, EventTooLarge..."""
    if not isinstance(raw, dict):
        raise InvalidCloudEvent("a CloudEvent must be a JSON object")
    missing = [name for name in ("specversion", "id", "source", "type") if name not in raw]
    if missing:
        # Checked first: the SDK would invent an id, which would defeat deduplication.
        raise InvalidCloudEvent(f"missing required attributes: {', '.join(missing)}")
    if raw["specversion"] != "1.0":
        raise InvalidCloudEvent(f"specversion must be 1.0, not {raw['specversion']!r}")
    if "data_base64" in raw:
        raise InvalidCloudEvent("data must be JSON (data_base64 is not accepted)")
    problem, size = checked_size(raw)
    if problem is not None:
        raise InvalidCloudEvent(problem)
    if size > max_event_bytes:
        raise EventTooLarge("this CloudEvent", size, max_event_bytes)
    # What JSONFormat.read does after its json.loads, on the object we already decoded (a
    # JSON round trip per event was a tenth of a batch's time).
    attributes = {name: value for name, value in raw.items() if name != "data"}
    try:
        if "time" in attributes:
            attributes["time"] = _timestamp(attributes["time"])
        event = CloudEvent(attributes, raw.get("data"))
    except (BaseCloudEventException, ValueError, TypeError, OverflowError) as exc:
        raise InvalidCloudEvent(f"not a valid CloudEvent: {exc}") from None
    source, ce_id, ce_type = event.get_source(), event.get_id(), event.get_type()
    if not ce_id or not source:
        raise InvalidCloudEvent("id and source must not be empty")
    if len(ce_id) > 500 or len(source) > 500:
        raise InvalidCloudEvent("id and source must be at most 500 characters")
    time = event.get_time() if "time" in raw else None
    if time is not None and (problem := time_problem(time)) is not None:
        raise InvalidCloudEvent(f"time {problem}")
    latest = received_at + max_clock_skew
    if time is not None and time > latest:
        raise OccurredInFuture("time", time, latest)
    subject = event.get_subject()
    envelope = Envelope(source, ce_id, ce_type, time, subject)
    data = event.get_data()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidCloudEvent("data must be a JSON object")
    command, deal_ref = _command(ce_type, data, time or received_at, source, ce_id)
    if isinstance(command, c.RecordEvidence) and command.occurred_at > latest:
        raise OccurredInFuture("data.occurred_at", command.occurred_at, latest)
    return Ingestible(
        envelope,
        _deal_of(subject, deal_ref),
        command,
        cloudevent_event_id(source, ce_id),
        deal_ref,
    )


def _timestamp(text: Any) -> datetime:
    """An RFC 3339 time; the standard library's parser first (a tenth of dateutil's cost),
    dateutil's for the ISO 8601 forms it alone reads."""
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    parsed: datetime = isoparse(text)
    return parsed


def _command(
    ce_type: str, data: dict[str, Any], at: datetime, source: str, ce_id: str
) -> tuple[c.Command, ExternalRef | None]:
    try:
        if ce_type == EVIDENCE_TYPE:
            evidence = EvidenceData.model_validate(data)
            return (
                c.RecordEvidence(
                    evidence_id=cloudevent_evidence_id(source, ce_id),
                    kind=evidence.kind,
                    criteria=tuple(evidence.criteria),
                    summary=evidence.summary,
                    occurred_at=evidence.occurred_at or at,
                    source=evidence.source or EvidenceSource(system=source, ref=ce_id),
                ),
                evidence.deal_ref,
            )
        if ce_type in SUPPORTED_TYPES:
            activity = ActivityData.model_validate(data)
            details = {k: v for k, v in data.items() if k != "deal_ref"}
            return (
                c.RecordBuyerActivity(
                    activity_type=ce_type.removeprefix(ACTIVITY_PREFIX),
                    occurred_at=at,
                    details=details,
                ),
                activity.deal_ref,
            )
    except ValidationError as exc:
        where = "; ".join(
            f"data.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidCloudEvent(where) from None
    raise UnknownEventType(
        f"type {ce_type!r} is not supported; supported: {', '.join(SUPPORTED_TYPES)}"
    )


def _deal_of(subject: str | None, deal_ref: ExternalRef | None) -> UUID:
    if subject:
        try:
            deal_id = UUID(subject)
        except ValueError:
            raise InvalidCloudEvent(
                f"subject must be a deal id (a UUID), not {subject!r}"
            ) from None
        if deal_ref is not None and deal_id != deal_id_for_external_ref(
            deal_ref.source, deal_ref.id
        ):
            raise InvalidCloudEvent(
                f"subject {subject} and data.deal_ref (source={deal_ref.source!r},"
                f" id={deal_ref.id!r}) name different deals: send one, or make them agree"
            )
        return deal_id
    if deal_ref is not None:
        return deal_id_for_external_ref(deal_ref.source, deal_ref.id)
    raise InvalidCloudEvent("name the deal: subject (a deal id) or data.deal_ref {source, id}")
