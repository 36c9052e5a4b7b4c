"""Domain events: frozen, versioned data. Stored by `type` name, never by import path.

The store keeps `type` and `schema_version` in columns of their own and the rest of the
model as `data`. Stored bytes are never rewritten (hashes cover them): an event read back at
an older schema version is upgraded step by step by its upcasters before validation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, get_args
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    SCHEMA_VERSION: ClassVar[int] = 1
    """The version new events of this class are stored at; raise it with an upcaster."""

    @property
    def schema_version(self) -> int:
        return self.SCHEMA_VERSION


class ExternalRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str
    id: str


class Override(BaseModel):
    """A manager's decision to move a deal without the evidence; always visible to auditors."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    reason: str
    by: str
    """The acting API key's id."""
    by_name: str | None = None
    by_role: str | None = None


class EvidenceSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    system: str | None = None
    ref: str | None = None
    url: str | None = None
    digest: str | None = None


class DealOpened(Event):
    type: Literal["DealOpened"] = "DealOpened"
    name: str
    owner: str
    account: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    close_date: date | None = None
    pipeline: str
    pipeline_version: int
    stage: str
    external_ref: ExternalRef | None = None


class BuyerActivityRecorded(Event):
    type: Literal["BuyerActivityRecorded"] = "BuyerActivityRecorded"
    activity_type: str
    occurred_at: datetime
    details: dict[str, Any] = Field(default_factory=dict)


class EvidenceRecorded(Event):
    type: Literal["EvidenceRecorded"] = "EvidenceRecorded"
    evidence_id: UUID
    kind: str
    criteria: tuple[str, ...]
    summary: str
    occurred_at: datetime
    source: EvidenceSource | None = None
    recorded_by: str


class EvidenceRetracted(Event):
    type: Literal["EvidenceRetracted"] = "EvidenceRetracted"
    evidence_id: UUID
    reason: str
    retracted_by: str


class StageAdvanced(Event):
    type: Literal["StageAdvanced"] = "StageAdvanced"
    from_stage: str
    to_stage: str
    criteria: dict[str, tuple[UUID, ...]]
    """Every exit criterion of every stage left, with the evidence that met it."""
    pipeline_version: int
    override: Override | None = None
    note: str | None = None


class StageRegressed(Event):
    type: Literal["StageRegressed"] = "StageRegressed"
    from_stage: str
    to_stage: str
    trigger: str
    note: str | None = None
    pipeline_version: int


class DealNurtured(Event):
    type: Literal["DealNurtured"] = "DealNurtured"
    from_stage: str
    reason: str
    resume_on: date


class DealReactivated(Event):
    type: Literal["DealReactivated"] = "DealReactivated"
    to_stage: str
    pipeline_version: int


class DealDisqualified(Event):
    type: Literal["DealDisqualified"] = "DealDisqualified"
    from_stage: str
    reason: str
    note: str | None = None


class DealWon(Event):
    type: Literal["DealWon"] = "DealWon"
    from_stage: str
    criteria: dict[str, tuple[UUID, ...]]
    pipeline_version: int
    override: Override | None = None
    note: str | None = None


class DealMigrated(Event):
    """The deal moved to another version of its pipeline, by an explicit command: from here
    on it is judged by that version's rules. History before it keeps the rules it had."""

    type: Literal["DealMigrated"] = "DealMigrated"
    pipeline: str
    from_version: int
    to_version: int
    from_stage: str
    to_stage: str
    reason: str


class BlockerRaised(Event):
    type: Literal["BlockerRaised"] = "BlockerRaised"
    blocker_id: UUID
    category: str
    description: str


class BlockerResolved(Event):
    type: Literal["BlockerResolved"] = "BlockerResolved"
    blocker_id: UUID
    resolution: str


class NextStepSet(Event):
    type: Literal["NextStepSet"] = "NextStepSet"
    description: str
    due_date: date
    origin: Literal["manual", "stage_template"] = "manual"


class NextStepCompleted(Event):
    type: Literal["NextStepCompleted"] = "NextStepCompleted"
    description: str


class NextStepCancelled(Event):
    """The open next step dropped undone, e.g. because the deal was won or disqualified."""

    type: Literal["NextStepCancelled"] = "NextStepCancelled"
    description: str
    reason: str


class StakeholderAdded(Event):
    type: Literal["StakeholderAdded"] = "StakeholderAdded"
    stakeholder_id: UUID
    name: str
    role: str
    title: str | None = None


class StakeholderChanged(Event):
    type: Literal["StakeholderChanged"] = "StakeholderChanged"
    stakeholder_id: UUID
    role: str | None = None
    title: str | None = None


class StakeholderLeft(Event):
    type: Literal["StakeholderLeft"] = "StakeholderLeft"
    stakeholder_id: UUID


class AmountChanged(Event):
    type: Literal["AmountChanged"] = "AmountChanged"
    amount: Decimal | None
    currency: str | None


class CloseDateChanged(Event):
    type: Literal["CloseDateChanged"] = "CloseDateChanged"
    close_date: date | None


class OwnerAssigned(Event):
    type: Literal["OwnerAssigned"] = "OwnerAssigned"
    owner: str


DomainEvent = Annotated[
    DealOpened
    | BuyerActivityRecorded
    | EvidenceRecorded
    | EvidenceRetracted
    | StageAdvanced
    | StageRegressed
    | DealNurtured
    | DealReactivated
    | DealDisqualified
    | DealWon
    | DealMigrated
    | BlockerRaised
    | BlockerResolved
    | NextStepSet
    | NextStepCompleted
    | NextStepCancelled
    | StakeholderAdded
    | StakeholderChanged
    | StakeholderLeft
    | AmountChanged
    | CloseDateChanged
    | OwnerAssigned,
    Field(discriminator="type"),
]

# type name -> the class that reads it now (a new schema version replaces the entry).
EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls for cls in get_args(get_args(DomainEvent)[0])
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (type name, version n) -> turns the data of version n into the data of version n + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownSchemaVersion(ValueError):
    """A stored event this code cannot read: no upcaster, or newer than the code."""


def upcaster(type_: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the step that upgrades `type_`'s data from `from_version` to the next."""

    def register(step: Upcaster) -> Upcaster:
        UPCASTERS[(type_, from_version)] = step
        return step

    return register


def event_data(event: Event) -> dict[str, Any]:
    """The JSON stored as `data`: all but type, which has a column (so has the version)."""
    return event.model_dump(mode="json", exclude={"type"})


def upcast(type_: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    """`data` as stored at `schema_version`, upgraded step by step to the current version."""
    current = EVENT_TYPES[type_].SCHEMA_VERSION
    if schema_version > current:
        raise UnknownSchemaVersion(
            f"{type_} v{schema_version} is newer than this code (v{current}): upgrade it"
        )
    for version in range(schema_version, current):
        step = UPCASTERS.get((type_, version))
        if step is None:
            raise UnknownSchemaVersion(f"no upcaster from {type_} v{version} to v{version + 1}")
        data = step(dict(data))
    return data


def parse_event(type_: str, schema_version: int, data: dict[str, Any]) -> DomainEvent:
    """Rebuild an event from its stored columns, upcast to the current schema version."""
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        raise UnknownSchemaVersion(f"unknown event type {type_!r}")
    event = cls.model_validate({**upcast(type_, schema_version, data), "type": type_})
    return event  # type: ignore[return-value]  # every class in EVENT_TYPES is in DomainEvent


def parse_event_json(type_: str, schema_version: int, data: str | bytes) -> DomainEvent:
    """`parse_event` from the stored JSON text: at the current schema version pydantic
    validates the text directly (the fast path a rebuild takes); older ones are upcast."""
    cls = EVENT_TYPES.get(type_)
    if cls is None:
        raise UnknownSchemaVersion(f"unknown event type {type_!r}")
    if schema_version == cls.SCHEMA_VERSION:
        return cls.model_validate_json(data)  # type: ignore[return-value]  # as parse_event
    return parse_event(type_, schema_version, json.loads(data))
