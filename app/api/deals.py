"""Deal routes: parse, call the service, shape the response. No business rule lives here."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from app.api import schemas as s
from app.api.csv_format import CSV_RESPONSE, PageFormat, csv_response, wants_csv
from app.api.deps import (
    MAX_POSITION,
    READ,
    BuyerCommand,
    ConnectionDep,
    DealCommand,
    DealMigration,
    DealOpening,
    DealUpdate,
    MinPosition,
    ReadConnectionDep,
    ServiceDep,
    StoreDep,
    projected,
)
from app.api.json_bodies import ExactJsonRoute
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.schemas import IsoTime
from app.domain import commands as c
from app.domain.errors import DealNotFound, InvalidRequest
from app.domain.identifiers import entity_id
from app.domain.pipeline_versions import PIPELINE_EVENT_TYPES
from app.events.hashing import expected_hash
from app.projections.deals import list_deals as list_deals_from
from app.projections.deals import load_deal
from app.service.deals import CommandResult

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, **PROBLEM}
    for code, text in {
        400: "Malformed header",
        404: "Deal not found",
        409: "Not allowed in the deal's current state, or lost a race",
        412: "If-Match does not match the deal's version",
        422: "Invalid request or exit criteria not met",
    }.items()
}

router = APIRouter(prefix="/v1/deals", tags=["deals"], responses=ERRORS, route_class=ExactJsonRoute)
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Status = Literal["open", "nurture", "won", "disqualified"]


def _deal(result: CommandResult, response: Response) -> s.DealOut:
    response.headers["ETag"] = f'"{result.state.version}"'
    if result.pipeline is None:
        raise DealNotFound(f"deal {result.state.deal_id} does not exist")
    return s.DealOut.of(result.state, result.pipeline, result.position)


def _created(deal_id: UUID, result: CommandResult, response: Response, **ids: UUID) -> s.Created:
    response.headers["ETag"] = f'"{result.state.version}"'
    return s.Created(deal_id=deal_id, version=result.state.version, position=result.position, **ids)


@router.post("", status_code=201, summary="Open a deal in the first stage")
async def create_deal(
    body: s.CreateDeal,
    response: Response,
    service: ServiceDep,
    context: DealOpening,
) -> s.DealOut:
    command = c.OpenDeal(
        **body.model_dump(exclude={"external_ref"}), external_ref=body.external_ref
    )
    result = await service.open(command, context)
    response.headers["Location"] = f"/v1/deals/{result.state.deal_id}"
    return _deal(result, response)


@router.get(
    "",
    summary="List deals, filtered, with cursor pagination (from the deals read model)",
    dependencies=[READ, Depends(projected("deals"))],
    responses={503: {"description": "min_position not reached in time", **PROBLEM}, **CSV_RESPONSE},
)
async def list_deals(
    request: Request,
    connection: ReadConnectionDep,
    service: ServiceDep,
    stage: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    status: Annotated[
        Status | None, Query(description="open, nurture, won or disqualified")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
    format: PageFormat = None,
    min_position: MinPosition = None,
) -> s.DealPage:
    after = decode_cursor(cursor, "p")
    rows = await list_deals_from(
        connection,
        stage=stage,
        owner=owner,
        status=status,
        after_position=after["p"] if after else 0,
        limit=limit + 1,
    )
    page = rows[:limit]
    more = len(rows) > limit
    catalog = await service.catalog_for([state for _, state in page])
    items = [s.DealOut.of(state, state.pipeline_in(catalog)) for _, state in page]
    if wants_csv(request, format):
        return csv_response(  # type: ignore[return-value]
            [item.model_dump(mode="json") for item in items], list(s.DealOut.model_fields)
        )
    return s.DealPage(
        items=items,
        next_cursor=encode_cursor({"p": page[-1][0]}) if more else None,
    )


@router.get(
    "/{deal_id}",
    summary="The deal now (read model), or as it stood at a past time or log position (replayed)",
    dependencies=[READ, Depends(projected("deals"))],
    responses={503: {"description": "min_position not reached in time", **PROBLEM}},
)
async def get_deal(
    deal_id: UUID,
    connection: ConnectionDep,
    response: Response,
    service: ServiceDep,
    as_of: Annotated[
        IsoTime | None, Query(description="Replay the deal's events recorded up to then.")
    ] = None,
    as_of_position: Annotated[
        int | None,
        Query(ge=0, le=MAX_POSITION, description="Replay the deal's events up to this position."),
    ] = None,
    min_position: MinPosition = None,
) -> s.DealOut:
    if as_of is not None and as_of_position is not None:
        raise InvalidRequest("give as_of or as_of_position, not both")
    replay = as_of is not None or as_of_position is not None
    if replay:
        state = await service.load(deal_id, up_to_position=as_of_position, recorded_up_to=as_of)
    else:
        state = await service.current(deal_id, *await load_deal(connection, deal_id))
    if not state.exists:
        raise DealNotFound(f"deal {deal_id} {'did not exist then' if replay else 'does not exist'}")
    return _deal(CommandResult(state, None, 0, await service.pipeline_of(state)), response)


@router.patch("/{deal_id}", summary="Change amount, currency, close date or owner")
async def patch_deal(
    deal_id: UUID,
    body: s.PatchDeal,
    response: Response,
    service: ServiceDep,
    context: DealUpdate,
) -> s.DealOut:
    command = c.ChangeDeal(**body.model_dump(exclude_unset=True))
    return _deal(await service.execute(deal_id, command, context), response)


@router.get(
    "/{deal_id}/history", summary="The deal's events in order, as stored", dependencies=[READ]
)
async def deal_history(
    deal_id: UUID,
    store: StoreDep,
    connection: ConnectionDep,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> s.HistoryPage:
    after = decode_cursor(cursor, "v")
    events = await store.read_stream(deal_id)
    if not events or events[0].type in PIPELINE_EVENT_TYPES:
        raise DealNotFound(f"deal {deal_id} does not exist")
    start = after["v"] if after else 0
    page = [e for e in events if e.version > start][:limit]
    more = bool(page) and page[-1].version < events[-1].version
    leaves = {
        r["version"]: (r["leaf_index"], r["event_hash"])
        for r in await connection.fetch(
            "SELECT version, leaf_index, event_hash FROM log_leaves"
            " WHERE stream_id = $1 AND version > $2 AND version <= $3",
            deal_id,
            start,
            page[-1].version if page else start,
        )
    }
    return s.HistoryPage(
        items=[
            s.HistoryItem(
                **s.HistoryItem.fields_of(e),
                hash_verified=expected_hash(e, e.prev_hash) == e.hash
                and leaves.get(e.version, (None, e.hash))[1] == e.hash,
                leaf_index=leaves.get(e.version, (None, None))[0],
            )
            for e in page
        ],
        next_cursor=encode_cursor({"v": page[-1].version}) if more else None,
    )


@router.post("/{deal_id}/evidence", status_code=201, summary="Record evidence about the buyer")
async def record_evidence(
    deal_id: UUID,
    body: s.RecordEvidenceBody,
    response: Response,
    service: ServiceDep,
    context: BuyerCommand,
) -> s.Created:
    evidence_id = entity_id(deal_id, "evidence", context.actor.id, context.idempotency_key)
    command = c.RecordEvidence(
        evidence_id=evidence_id,
        kind=body.kind,
        criteria=tuple(body.criteria),
        summary=body.summary,
        occurred_at=body.occurred_at,
        source=body.source,
    )
    result = await service.execute(deal_id, command, context)
    return _created(deal_id, result, response, evidence_id=evidence_id)


@router.post("/{deal_id}/evidence/{evidence_id}/retract", summary="Retract evidence, with why")
async def retract_evidence(
    deal_id: UUID,
    evidence_id: UUID,
    body: s.RetractBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    command = c.RetractEvidence(evidence_id=evidence_id, reason=body.reason)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post("/{deal_id}/activities", status_code=201, summary="Record buyer activity")
async def record_activity(
    deal_id: UUID,
    body: s.ActivityBody,
    response: Response,
    service: ServiceDep,
    context: BuyerCommand,
) -> s.Created:
    command = c.RecordBuyerActivity(
        activity_type=body.type, occurred_at=body.occurred_at, details=body.details
    )
    return _created(deal_id, await service.execute(deal_id, command, context), response)


@router.post(
    "/{deal_id}/advance",
    summary="Advance to a later stage: every exit criterion evidenced, or a manager override",
)
async def advance(
    deal_id: UUID,
    body: s.AdvanceBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    override = body.override.reason if body.override else None
    command = c.AdvanceStage(to_stage=body.to_stage, note=body.note, override_reason=override)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post("/{deal_id}/regress", summary="Move back to an earlier stage, with the trigger")
async def regress(
    deal_id: UUID,
    body: s.RegressBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    command = c.RegressStage(to_stage=body.to_stage, trigger=body.trigger, note=body.note)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post("/{deal_id}/disqualify", summary="Disqualify the deal, with the reason")
async def disqualify(
    deal_id: UUID,
    body: s.DisqualifyBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    command = c.DisqualifyDeal(reason=body.reason, note=body.note)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post(
    "/{deal_id}/win",
    summary="Mark the deal won: the closing criteria evidenced, or a manager override",
)
async def win(
    deal_id: UUID,
    body: s.WinBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    override = body.override.reason if body.override else None
    command = c.WinDeal(note=body.note, override_reason=override)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post(
    "/{deal_id}/nurture",
    summary="Park an open deal out of the active pipeline until a resume date",
)
async def nurture(
    deal_id: UUID,
    body: s.NurtureBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    command = c.NurtureDeal(reason=body.reason, resume_on=body.resume_on)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post(
    "/{deal_id}/reactivate",
    summary="Bring a nurtured deal back, to the stage it left or an earlier one",
)
async def reactivate(
    deal_id: UUID,
    body: s.ReactivateBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    command = c.ReactivateDeal(to_stage=body.to_stage)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post("/{deal_id}/blockers", status_code=201, summary="Raise a blocker")
async def raise_blocker(
    deal_id: UUID,
    body: s.BlockerBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.Created:
    blocker_id = entity_id(deal_id, "blocker", context.actor.id, context.idempotency_key)
    command = c.RaiseBlocker(
        blocker_id=blocker_id, category=body.category, description=body.description
    )
    result = await service.execute(deal_id, command, context)
    return _created(deal_id, result, response, blocker_id=blocker_id)


@router.post("/{deal_id}/blockers/{blocker_id}/resolve", summary="Resolve a blocker")
async def resolve_blocker(
    deal_id: UUID,
    blocker_id: UUID,
    body: s.ResolveBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    command = c.ResolveBlocker(blocker_id=blocker_id, resolution=body.resolution)
    return _deal(await service.execute(deal_id, command, context), response)


@router.put("/{deal_id}/next-step", summary="Set the next step and its due date")
async def set_next_step(
    deal_id: UUID,
    body: s.NextStepBody,
    response: Response,
    service: ServiceDep,
    context: DealUpdate,
) -> s.DealOut:
    command = c.SetNextStep(description=body.description, due_date=body.due_date)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post("/{deal_id}/next-step/complete", summary="Complete the open next step")
async def complete_next_step(
    deal_id: UUID, response: Response, service: ServiceDep, context: DealCommand
) -> s.DealOut:
    return _deal(await service.execute(deal_id, c.CompleteNextStep(), context), response)


@router.post("/{deal_id}/stakeholders", status_code=201, summary="Add a buyer stakeholder")
async def add_stakeholder(
    deal_id: UUID,
    body: s.StakeholderBody,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.Created:
    stakeholder_id = entity_id(deal_id, "stakeholder", context.actor.id, context.idempotency_key)
    command = c.AddStakeholder(
        stakeholder_id=stakeholder_id, name=body.name, role=body.role, title=body.title
    )
    result = await service.execute(deal_id, command, context)
    return _created(deal_id, result, response, stakeholder_id=stakeholder_id)


@router.patch("/{deal_id}/stakeholders/{stakeholder_id}", summary="Change a stakeholder's role")
async def change_stakeholder(
    deal_id: UUID,
    stakeholder_id: UUID,
    body: s.StakeholderPatch,
    response: Response,
    service: ServiceDep,
    context: DealUpdate,
) -> s.DealOut:
    command = c.ChangeStakeholder(stakeholder_id=stakeholder_id, role=body.role, title=body.title)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post("/{deal_id}/stakeholders/{stakeholder_id}/left", summary="A stakeholder left")
async def stakeholder_left(
    deal_id: UUID,
    stakeholder_id: UUID,
    response: Response,
    service: ServiceDep,
    context: DealCommand,
) -> s.DealOut:
    command = c.StakeholderLeaves(stakeholder_id=stakeholder_id)
    return _deal(await service.execute(deal_id, command, context), response)


@router.post(
    "/{deal_id}/migrate",
    summary="Move the deal to another version of its pipeline (managers): one audited event",
)
async def migrate_deal(
    deal_id: UUID,
    body: s.MigrateDealBody,
    response: Response,
    service: ServiceDep,
    context: DealMigration,
) -> s.DealOut:
    command = c.MigrateDeal(
        reason=body.reason, to_version=body.to_version, stage_mapping=dict(body.stage_mapping)
    )
    return _deal(await service.execute(deal_id, command, context), response)
