"""Auditor routes: stage history, provenance, chain verification, the pipeline as of a time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from app.api.csv_format import CSV_RESPONSE, TableFormat, csv_response, wants_csv
from app.api.deps import (
    READ,
    ConnectionDep,
    MinPosition,
    ServiceDep,
    ServicesDep,
    StoreDep,
    projected,
)
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.schemas import DealOut, IsoTime
from app.domain.errors import DealNotFound, InvalidRequest, UnknownValue
from app.domain.events import EvidenceSource, Override
from app.domain.pipeline import DISQUALIFIED, NURTURE, WON
from app.domain.pipeline_versions import PIPELINE_EVENT_TYPES
from app.domain.provenance import EvidenceAtTheTime, provenance
from app.domain.stage_facts import StayTimes, stage_facts
from app.domain.state import pipelines_named
from app.events.hashing import expected_hash
from app.events.recorded import to_recorded
from app.projections.stage_intervals import intervals_of
from app.service import snapshots
from app.service.integrity import check_deal

router = APIRouter(prefix="/v1", tags=["audit"], dependencies=[READ])
SECONDS_PER_DAY = 86_400


class IntervalOut(BaseModel):
    seq: int
    stage: str
    entered_at: datetime
    left_at: datetime | None
    left_how: str | None
    duration_seconds: float
    duration_days: float
    current: bool


class StageHistory(BaseModel):
    deal_id: UUID
    intervals: list[IntervalOut]


@router.get(
    "/deals/{deal_id}/stage-history",
    summary="Every stay in a stage, in order, with durations (open stays count until now)",
    dependencies=[Depends(projected("stage_intervals"))],
)
async def stage_history(
    deal_id: UUID, connection: ConnectionDep, min_position: MinPosition = None
) -> StageHistory:
    intervals = await intervals_of(connection, deal_id)
    if not intervals:
        raise DealNotFound(f"no stage history for deal {deal_id}")
    now = datetime.now(UTC)
    out = []
    for interval in intervals:
        seconds = ((interval.left_at or now) - interval.entered_at).total_seconds()
        out.append(
            IntervalOut(
                seq=interval.seq,
                stage=interval.stage,
                entered_at=interval.entered_at,
                left_at=interval.left_at,
                left_how=interval.left_how,
                duration_seconds=seconds,
                duration_days=round(seconds / SECONDS_PER_DAY, 4),
                current=interval.left_at is None,
            )
        )
    return StageHistory(deal_id=deal_id, intervals=out)


class StageFactsOut(BaseModel):
    stage: str
    stays: int
    first_entered_at: datetime
    last_exited_at: datetime | None
    """None while the deal is in the stage now."""
    latest_days: float
    cumulative_days: float
    """Every stay summed (repeat stays after a regression or nurture count)."""
    current: bool


class DealStageFacts(BaseModel):
    deal_id: UUID
    as_of: datetime
    stages: list[StageFactsOut]


@router.get(
    "/deals/{deal_id}/stage-facts",
    summary="Per stage: first entered, last exited, latest and cumulative days in it",
    dependencies=[Depends(projected("stage_intervals"))],
)
async def deal_stage_facts(
    deal_id: UUID,
    connection: ConnectionDep,
    as_of: Annotated[IsoTime | None, Query(description="As they stood then")] = None,
    min_position: MinPosition = None,
) -> DealStageFacts:
    at = as_of or datetime.now(UTC)
    intervals = await intervals_of(connection, deal_id)
    facts = stage_facts([StayTimes(i.stage, i.entered_at, i.left_at) for i in intervals], at)
    if not facts:
        raise DealNotFound(f"no stage history for deal {deal_id} by {at.isoformat()}")
    return DealStageFacts(
        deal_id=deal_id,
        as_of=at,
        stages=[StageFactsOut.model_validate(f, from_attributes=True) for f in facts],
    )


class ActorOut(BaseModel):
    """An API key as the events' metadata recorded it when it acted."""

    id: str
    name: str | None = None
    role: str | None = None


People = dict[str, ActorOut]


def _who(people: People, actor_id: str) -> ActorOut:
    return people.get(actor_id) or ActorOut(id=actor_id)


class RetractionOut(BaseModel):
    reason: str
    by: ActorOut
    recorded_at: datetime


class EvidenceOut(BaseModel):
    evidence_id: UUID
    kind: str
    summary: str
    source: EvidenceSource | None
    occurred_at: datetime
    recorded_at: datetime
    recorded_by: ActorOut
    retracted_later: RetractionOut | None

    @classmethod
    def of(cls, item: EvidenceAtTheTime, people: People) -> EvidenceOut:
        later = item.retracted_later
        return cls(
            evidence_id=item.evidence.evidence_id,
            kind=item.evidence.kind,
            summary=item.evidence.summary,
            source=item.source,
            occurred_at=item.evidence.occurred_at,
            recorded_at=item.evidence.recorded_at,
            recorded_by=_who(people, item.recorded_by),
            retracted_later=RetractionOut(
                reason=later.reason, by=_who(people, later.by), recorded_at=later.recorded_at
            )
            if later
            else None,
        )


class EntryOut(BaseModel):
    event_type: str
    version: int
    from_stage: str | None
    recorded_at: datetime
    actor: ActorOut | None
    pipeline_version: int
    override: Override | None
    trigger: str | None
    criteria: dict[str, list[EvidenceOut]]
    hash_verified: bool = Field(
        description="False: the stored event does not match its hash (see /verify)"
    )


class Provenance(BaseModel):
    deal_id: UUID
    stage: str
    entries: list[EntryOut]


@router.get(
    "/deals/{deal_id}/provenance",
    summary="How the deal entered a stage each time: the event, who, and the evidence it stood on",
)
async def deal_provenance(
    deal_id: UUID,
    service: ServiceDep,
    stage: Annotated[str, Query(description="A stage key, or won / disqualified / nurture")],
) -> Provenance:
    stored = await service.store.read_stream(deal_id)
    if not stored or stored[0].type in PIPELINE_EVENT_TYPES:
        raise DealNotFound(f"deal {deal_id} does not exist")
    history = [to_recorded(event) for event in stored]
    lived_under = pipelines_named(history)
    catalog = await service.catalog_holding(lived_under)
    # Every stage of every version the deal lived under (a migration may rename stages).
    stages = [
        key
        for name, version in sorted(lived_under, key=lambda pair: pair[1])
        for key in catalog.get(name, version).stage_keys
    ]
    allowed = [*dict.fromkeys(stages), NURTURE, WON, DISQUALIFIED]
    if stage not in allowed:
        raise UnknownValue("stage", stage, allowed)
    actors = {e.version: str(e.metadata.get("actor", {}).get("id")) for e in stored}
    people: People = {
        str(a["id"]): ActorOut.model_validate(a)
        for e in stored
        if isinstance(a := e.metadata.get("actor"), dict) and "id" in a
    }
    entries = provenance(deal_id, history, actors, stage, catalog)
    altered = {e.version for e in stored if expected_hash(e, e.prev_hash) != e.hash}
    return Provenance(
        deal_id=deal_id,
        stage=stage,
        entries=[
            EntryOut(
                event_type=entry.event_type,
                version=entry.version,
                from_stage=entry.from_stage,
                recorded_at=entry.recorded_at,
                actor=_who(people, entry.actor) if entry.actor else None,
                pipeline_version=entry.pipeline_version,
                override=entry.override,
                trigger=entry.trigger,
                criteria={
                    key: [EvidenceOut.of(item, people) for item in items]
                    for key, items in entry.criteria.items()
                },
                hash_verified=entry.version not in altered,
            )
            for entry in entries
        ],
    )


class BreakOut(BaseModel):
    version: int
    reason: str


class Verification(BaseModel):
    valid: bool
    events_checked: int
    head_hash: str | None
    first_invalid_version: int | None
    reason: str | None
    breaks: list[BreakOut] = Field(description="Every event that does not verify, and why")
    checkpoint_tree_size: int | None = Field(
        description="The latest signed checkpoint the deal's events were proven against"
    )
    events_in_checkpoint: int = Field(description="Of the deal's events, how many it covers")


@router.get(
    "/deals/{deal_id}/verify",
    summary="Recompute the deal's hash chain and prove its events in the signed log",
)
async def verify_deal(
    deal_id: UUID, store: StoreDep, connection: ConnectionDep, services: ServicesDep
) -> Verification:
    result = await check_deal(store, connection, deal_id, services.verifier)
    if not result.events and not result.breaks:
        raise DealNotFound(f"deal {deal_id} does not exist")
    first = result.breaks[0] if result.breaks else None
    return Verification(
        valid=result.valid,
        events_checked=len(result.events),
        head_hash=result.events[-1].hash.hex() if result.valid else None,
        first_invalid_version=first.version if first else None,
        reason=first.reason if first else None,
        breaks=[BreakOut(version=b.version, reason=b.reason) for b in result.breaks],
        checkpoint_tree_size=result.checkpoint.tree_size if result.checkpoint else None,
        events_in_checkpoint=result.covered,
    )


class StageTotal(BaseModel):
    stage: str
    count: int
    amounts: dict[str, Decimal]
    """Sum of deal amounts per currency (deals without a currency under "")."""
    weighted: dict[str, Decimal]
    """Open deals' amounts x their stage's probability, per currency."""


class PipelineSnapshot(BaseModel):
    as_of: datetime | None
    stages: list[StageTotal]
    deals: list[DealOut]
    """One page of the deals (in opening order); the totals cover them all."""
    next_cursor: str | None


@router.get(
    "/pipeline",
    summary="The pipeline: count, amount and weighted amount per stage, and a page of the"
    " deals; filter by owner and stage; as of a past time",
    dependencies=[Depends(projected("deals"))],
    responses=CSV_RESPONSE,
)
async def pipeline_snapshot(
    request: Request,
    connection: ConnectionDep,
    service: ServiceDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    stage: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    as_of: Annotated[
        IsoTime | None,
        Query(description="Replay every deal's events recorded up to then (slow on large logs)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    format: Annotated[
        TableFormat | None, Query(description="csv: the page of deals as a spreadsheet")
    ] = None,
    min_position: MinPosition = None,
) -> PipelineSnapshot:
    after = decode_cursor(cursor, "i")
    start = after["i"] if after else 0
    if start < 0:
        raise InvalidRequest("cursor is not valid: use next_cursor from a previous page")
    snapshot = await snapshots.pipeline_snapshot(
        connection, service, as_of, owner=owner, stage=stage, start=start, limit=limit
    )
    page = snapshot.deals
    catalog = await service.catalog_for(page)
    deals = [DealOut.of(state, state.pipeline_in(catalog)) for state in page]
    if wants_csv(request, format):
        return csv_response(  # type: ignore[return-value]
            [d.model_dump(mode="json") for d in deals], list(DealOut.model_fields)
        )
    more = start + limit < snapshot.total
    return PipelineSnapshot(
        as_of=as_of,
        stages=[
            StageTotal.model_validate(total, from_attributes=True) for total in snapshot.stages
        ],
        deals=deals,
        next_cursor=encode_cursor({"i": start + limit}) if more else None,
    )
