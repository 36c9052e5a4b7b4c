"""POST /v1/events: CloudEvents 1.0 from other systems, one (structured) or many (batch)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from app.api.auth import require
from app.api.deps import RequestIdDep, ServiceDep, ServicesDep
from app.api.problems import PROBLEM_JSON
from app.domain.decide import Actor
from app.domain.errors import DomainError, InvalidRequest, UnsupportedMediaType
from app.domain.json_values import loads_exact
from app.domain.time_bounds import YEAR_PATTERN
from app.service.deals import Outcome
from app.service.ingest import (
    BATCH,
    MAX_BATCH,
    STRUCTURED,
    SUPPORTED_TYPES,
    Ingestible,
    from_binary,
    identity_of,
    parse,
)

router = APIRouter(prefix="/v1", tags=["ingestion"])
Ingester = Annotated[Actor, Depends(require("events:ingest"))]

_CLOUDEVENT: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "minLength": 1, "maxLength": 500},
        "source": {"type": "string", "minLength": 1, "maxLength": 500},
        "type": {"type": "string", "enum": list(SUPPORTED_TYPES)},
        "subject": {"type": "string", "description": "The deal id (or use data.deal_ref)."},
        "time": {"type": "string", "format": "date-time", "pattern": YEAR_PATTERN},
        "datacontenttype": {"type": "string"},
        "data": {
            "type": "object",
            "description": "Activity: any details, plus optional deal_ref {source, id}."
            " Evidence: kind, criteria, summary, optional occurred_at, source, deal_ref.",
        },
    },
}


class ItemResult(BaseModel):
    index: int
    source: str | None
    id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    deal_id: UUID | None = None
    position: int | None = None
    """The log position of the stored event (a duplicate's: the original's)."""
    problem: dict[str, Any] | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    position: int | None
    """The highest position accepted: pass it as min_position to read your writes."""
    results: list[ItemResult]


def _result(
    index: int, raw: Any, parsed: Ingestible | DomainError, outcome: Outcome | DomainError
) -> ItemResult:
    source: str | None
    ce_id: str | None
    if isinstance(parsed, Ingestible):  # parse checked the whole item: echoed as sent
        source, ce_id = parsed.envelope.source, parsed.envelope.id
    else:
        source, ce_id = identity_of(raw)
    if isinstance(outcome, DomainError):
        return ItemResult(
            index=index, source=source, id=ce_id, status="rejected", problem=outcome.problem()
        )
    return ItemResult(
        index=index,
        source=source,
        id=ce_id,
        status=outcome.status,
        deal_id=outcome.deal_id,
        position=outcome.position,
        problem=outcome.error.problem() if outcome.error else None,
    )


@router.post(
    "/events",
    summary="Ingest CloudEvents: buyer activity and evidence from other systems",
    description=(
        f"`{STRUCTURED}`: one CloudEvent; 201 accepted, 200 a duplicate (its original"
        " position), else a problem. Binary mode (`ce-*` headers, the data as an"
        " `application/json` body): the same, for one CloudEvent."
        f" `{BATCH}`: a JSON array of up to {MAX_BATCH}; 200 when"
        " every item was accepted or a duplicate, 207 when some were rejected (each with its"
        " problem). (`source`, `id`) is the permanent deduplication key."
    ),
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                STRUCTURED: {"schema": _CLOUDEVENT},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "Binary mode: the CloudEvent's data as the body, its"
                        " attributes in headers: ce-specversion, ce-id, ce-source, ce-type,"
                        " ce-subject, ce-time.",
                    }
                },
                BATCH: {
                    "schema": {
                        "type": "array",
                        # Any JSON per item: each is judged alone, and a bad one is rejected
                        # in the 207 results, never the batch.
                        "items": {"description": "A CloudEvent, as for a single event."},
                        "minItems": 1,
                        "maxItems": MAX_BATCH,
                    }
                },
            },
        }
    },
    responses={
        200: {"model": BatchResult, "description": "All accepted or duplicates"},
        201: {"model": ItemResult, "description": "The one CloudEvent was accepted"},
        207: {"model": BatchResult, "description": "Some items rejected, each with a problem"},
        404: {"description": "The one CloudEvent names an unknown deal"},
        413: {"description": "Body too large, or the one CloudEvent over the event size cap"},
        415: {"description": "Not a CloudEvents JSON content type"},
        422: {"description": "Not a valid CloudEvent (batch: not a valid array)"},
    },
)
async def post_events(
    request: Request,
    services: ServicesDep,
    service: ServiceDep,
    actor: Ingester,
    request_id: RequestIdDep,
) -> Response:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    binary = "ce-specversion" in request.headers
    if binary:
        raws: list[Any] = [from_binary(request.headers, await request.body())]
    elif media_type not in (STRUCTURED, BATCH):
        raise UnsupportedMediaType(
            f"Content-Type must be {STRUCTURED} (one event), {BATCH} (a JSON array), or a"
            " binary-mode CloudEvent (ce-* headers, JSON data as the body)"
        )
    else:
        try:
            decoded = loads_exact(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("the body is not valid JSON") from None
        except RecursionError:
            raise InvalidRequest("the body is nested too deeply to be a CloudEvent") from None
        raws = decoded if media_type == BATCH else [decoded]
        if media_type == BATCH and (not isinstance(decoded, list) or not decoded):
            raise InvalidRequest("a batch must be a non-empty JSON array of CloudEvents")
        if len(raws) > MAX_BATCH:
            raise InvalidRequest(f"a batch holds at most {MAX_BATCH} CloudEvents, not {len(raws)}")
    batch = media_type == BATCH and not binary

    received_at = datetime.now(UTC)
    skew = timedelta(seconds=services.settings.max_clock_skew_seconds)
    parsed: list[Ingestible | DomainError] = []
    for raw in raws:
        try:
            parsed.append(parse(raw, received_at, skew, services.settings.max_event_bytes))
        except DomainError as refusal:  # an invalid CloudEvent rejects that item alone
            parsed.append(refusal)
    good = [item for item in parsed if not isinstance(item, DomainError)]
    outcomes = iter(await service.ingest(good, actor, request_id=request_id) if good else [])
    results = [
        _result(index, raw, item, item if isinstance(item, DomainError) else next(outcomes))
        for index, (raw, item) in enumerate(zip(raws, parsed, strict=True))
    ]

    if not batch:
        (only,) = results
        if only.status == "rejected":
            assert only.problem is not None
            body = {**only.problem, "source": only.source, "id": only.id}
            return JSONResponse(body, status_code=only.problem["status"], media_type=PROBLEM_JSON)
        status = 201 if only.status == "accepted" else 200
        return _json(only, status)

    counts = {s: sum(1 for r in results if r.status == s) for s in ("accepted", "duplicate")}
    rejected = len(results) - counts["accepted"] - counts["duplicate"]
    positions = [r.position for r in results if r.status == "accepted" and r.position]
    summary = BatchResult(
        accepted=counts["accepted"],
        duplicates=counts["duplicate"],
        rejected=rejected,
        position=max(positions) if positions else None,
        results=results,
    )
    return _json(summary, 207 if rejected else 200)


def _json(model: BaseModel, status: int) -> Response:
    # pydantic-core writes the same bytes as JSONResponse of model_dump, a third of the time.
    return Response(model.model_dump_json(), status, media_type="application/json")
