"""Request and response bodies of the deal API. Requests forbid unknown fields."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from app.domain.events import EvidenceSource, ExternalRef
from app.domain.pipeline import Key, Pipeline
from app.domain.state import DealState
from app.domain.time_bounds import RANGE, YEAR_PATTERN, bounded_date, bounded_time
from app.events.log import RecordedEvent

_ISO_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")


def _iso_text(value: Any) -> Any:
    """Times are ISO 8601 text with an offset; pydantic alone would also take epoch numbers."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_PREFIX.match(value)):
        return value
    raise ValueError("must be an ISO 8601 time with a UTC offset, e.g. 2026-11-20T10:00:00Z")


def _bounded(format_: str) -> WithJsonSchema:
    return WithJsonSchema(
        {"type": "string", "format": format_, "pattern": YEAR_PATTERN, "description": RANGE}
    )


IsoTime = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_text),
    AfterValidator(bounded_time),
    _bounded("date-time"),
]
Day = Annotated[date, AfterValidator(bounded_date), _bounded("date")]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
# Pipelines are data (GET /v1/pipelines lists them), so the schema cannot name them.
PipelineKey = Annotated[str, Field(min_length=1, max_length=200, description="A pipeline's key")]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateDeal(Request):
    name: ShortText
    owner: ShortText
    account: ShortText | None = None
    amount: Money | None = None
    currency: Currency | None = None
    close_date: Day | None = None
    pipeline: PipelineKey = "default"
    external_ref: ExternalRef | None = None


class MigrateDealBody(Request):
    reason: Text
    to_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    """The version of the deal's pipeline to move to (default: the latest)."""
    stage_mapping: dict[Key, Key] = Field(default_factory=dict, max_length=50)
    """Stage in the deal's version -> stage in the new one (needed where it has no such
    stage; otherwise the deal keeps its stage)."""


class PatchDeal(Request):
    amount: Money | None = None
    currency: Currency | None = None
    close_date: Day | None = None
    owner: ShortText | None = None


class RecordEvidenceBody(Request):
    kind: ShortText
    criteria: Annotated[list[ShortText], Field(min_length=1, max_length=20)]
    summary: Text
    occurred_at: IsoTime
    source: EvidenceSource | None = None


class RetractBody(Request):
    reason: Text


class ActivityBody(Request):
    type: ShortText
    occurred_at: IsoTime
    details: dict[str, Any] = Field(default_factory=dict)


class OverrideBody(Request):
    reason: Text


class AdvanceBody(Request):
    to_stage: ShortText
    note: Text | None = None
    override: OverrideBody | None = None


class WinBody(Request):
    note: Text | None = None
    override: OverrideBody | None = None


class RegressBody(Request):
    to_stage: ShortText
    trigger: ShortText
    note: Text | None = None


class DisqualifyBody(Request):
    reason: ShortText
    note: Text | None = None


class NurtureBody(Request):
    reason: Text
    resume_on: Day


class ReactivateBody(Request):
    to_stage: ShortText | None = None


class BlockerBody(Request):
    category: ShortText
    description: Text


class ResolveBody(Request):
    resolution: Text


class NextStepBody(Request):
    description: Text
    due_date: Day


class StakeholderBody(Request):
    name: ShortText
    role: ShortText
    title: ShortText | None = None


class StakeholderPatch(Request):
    role: ShortText | None = None
    title: ShortText | None = None


class CriterionStatus(BaseModel):
    key: str
    label: str
    met: bool
    evidence_ids: list[UUID]


class BlockerOut(BaseModel):
    blocker_id: UUID
    category: str
    description: str
    raised_at: datetime


class NextStepOut(BaseModel):
    description: str
    due_date: date
    origin: str
    set_at: datetime


class StakeholderOut(BaseModel):
    stakeholder_id: UUID
    name: str
    role: str
    title: str | None


class DealOut(BaseModel):
    id: UUID
    name: str
    owner: str
    account: str | None
    amount: Decimal | None
    currency: str | None
    close_date: date | None
    pipeline: str
    pipeline_version: int
    stage: str
    status: str
    stage_entered_at: datetime | None
    version: int
    exit_criteria: list[CriterionStatus]
    missing_required_fields: list[str]
    open_blockers: list[BlockerOut]
    next_step: NextStepOut | None
    stakeholders: list[StakeholderOut]
    last_buyer_activity_at: datetime | None
    external_ref: ExternalRef | None
    nurture_resume_on: date | None
    position: int | None = Field(
        default=None, description="Global log position this write reached (write responses)."
    )

    @classmethod
    def of(cls, state: DealState, pipeline: Pipeline, position: int | None = None) -> DealOut:
        """The deal as a client sees it, judged by `pipeline` (the version it lives under)."""
        criteria = []
        if state.stage in pipeline.stage_keys:
            for criterion in pipeline.stage(state.stage).exit_criteria:
                ids = state.evidence_for(criterion.key)
                criteria.append(
                    CriterionStatus(
                        key=criterion.key, label=criterion.label, met=bool(ids), evidence_ids=ids
                    )
                )
        step = state.next_step
        return cls(
            id=state.deal_id,
            name=state.name,
            owner=state.owner,
            account=state.account,
            amount=state.amount,
            currency=state.currency,
            close_date=state.close_date,
            pipeline=state.pipeline_key,
            pipeline_version=state.pipeline_version,
            stage=state.stage,
            status=state.status,
            stage_entered_at=state.stage_entered_at,
            version=state.version,
            exit_criteria=criteria,
            missing_required_fields=state.missing_required_fields(pipeline, state.stage),
            open_blockers=[
                BlockerOut(
                    blocker_id=b.blocker_id,
                    category=b.category,
                    description=b.description,
                    raised_at=b.raised_at,
                )
                for b in state.blockers.values()
            ],
            next_step=NextStepOut(
                description=step.description,
                due_date=step.due_date,
                origin=step.origin,
                set_at=step.set_at,
            )
            if step
            else None,
            stakeholders=[
                StakeholderOut(
                    stakeholder_id=s.stakeholder_id, name=s.name, role=s.role, title=s.title
                )
                for s in state.stakeholders.values()
            ],
            last_buyer_activity_at=state.last_buyer_activity_at,
            external_ref=state.external_ref,
            nurture_resume_on=state.nurture_resume_on,
            position=position,
        )


class DealPage(BaseModel):
    items: list[DealOut]
    next_cursor: str | None


class Created(BaseModel):
    """What a command that adds something to a deal returns."""

    deal_id: UUID
    version: int
    position: int | None
    evidence_id: UUID | None = None
    blocker_id: UUID | None = None
    stakeholder_id: UUID | None = None


class StoredEventOut(BaseModel):
    """An event as stored: what its hash covers, and where it stands in the log."""

    position: int
    version: int
    event_id: UUID
    type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    hash: str = Field(description="hex")
    leaf_index: int | None = Field(
        description="Its leaf in the log's Merkle tree (/v1/log/proof/inclusion); None"
        " until the sequencer has placed it"
    )

    @classmethod
    def fields_of(cls, event: RecordedEvent) -> dict[str, Any]:
        return {
            "position": event.position,
            "version": event.version,
            "event_id": event.event_id,
            "type": event.type,
            "schema_version": event.schema_version,
            "data": event.data,
            "metadata": event.metadata,
            "occurred_at": event.occurred_at,
            "recorded_at": event.recorded_at,
            "hash": event.hash.hex(),
        }


class HistoryItem(StoredEventOut):
    hash_verified: bool = Field(
        description="False: the stored event does not match its hash, or differs from the"
        " event the log sequenced (see /v1/deals/{id}/verify)"
    )


class HistoryPage(BaseModel):
    items: list[HistoryItem]
    next_cursor: str | None
