"""Domain events: frozen, versioned data. Stored by `type` name, never by import path.

The store keeps `type` in its own column and the rest of the model as `data`.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = 1


class ExternalRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str
    id: str


class Override(BaseModel):
    """A manager's decision to move a deal without the evidence; always visible to auditors."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    reason: str
    by: str


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
    | BlockerRaised
    | BlockerResolved
    | NextStepSet
    | NextStepCompleted
    | StakeholderAdded
    | StakeholderChanged
    | StakeholderLeft
    | AmountChanged
    | CloseDateChanged
    | OwnerAssigned,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[DomainEvent] = TypeAdapter(DomainEvent)


def event_data(event: Event) -> dict[str, Any]:
    """The JSON stored as `data`: all but type and schema version, which have columns."""
    return event.model_dump(mode="json", exclude={"type", "schema_version"})


def parse_event(type_: str, schema_version: int, data: dict[str, Any]) -> DomainEvent:
    """Rebuild an event from its stored columns; upcasters of old versions would go here."""
    return _ADAPTER.validate_python({**data, "type": type_, "schema_version": schema_version})
