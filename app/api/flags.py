"""Flags over HTTP: one deal's (with history), and the team's open ones, filtered."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from app.api.auth import require
from app.api.csv_format import CSV_RESPONSE, PageFormat, csv_response, wants_csv
from app.api.deps import (
    READ,
    MinPosition,
    ReadConnectionDep,
    ServiceDep,
    ServicesDep,
    projected,
)
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.schemas import IsoTime
from app.domain.errors import InvalidRequest
from app.domain.explanations import explain
from app.domain.flags import KINDS, FlagKind
from app.projections.flags import FIRST_KEY, FlagFilter, FlagOnDeal, flag_key
from app.service import snapshots

router = APIRouter(prefix="/v1", tags=["flags"])
AsOf = Annotated[
    IsoTime | None,
    Query(description="Evaluate at this time, on the deal as it stood then (default: now)."),
]


class FlagOut(BaseModel):
    deal_id: UUID
    kind: str
    severity: Literal["warning", "critical"]
    raised_at: datetime
    cleared_at: datetime | None
    numbers: dict[str, Any]
    """The figures the rule judged, e.g. days_in_stage, expected_days, ratio."""
    explanation: str
    """One sentence from those figures, e.g. "In discovery for 15 days, 2.1x the 7 days
    expected." """
    owner: str
    stage: str
    deal_name: str


class DealFlags(BaseModel):
    deal_id: UUID
    as_of: datetime | None
    flags: list[FlagOut]


class FlagPage(BaseModel):
    as_of: datetime | None
    items: list[FlagOut]
    next_cursor: str | None


def _out(found: FlagOnDeal) -> FlagOut:
    flag, state = found.flag, found.state
    return FlagOut(
        deal_id=flag.deal_id,
        kind=flag.kind,
        severity=flag.severity,
        raised_at=flag.raised_at,
        cleared_at=flag.cleared_at,
        numbers=flag.numbers,
        explanation=explain(flag.kind, flag.numbers, state.stage),
        owner=state.owner,
        stage=state.stage,
        deal_name=state.name,
    )


@router.get(
    "/deals/{deal_id}/flags",
    summary="A deal's flags: open and cleared (read model), or those standing at as_of",
    dependencies=[READ, Depends(projected("flags"))],
)
async def deal_flags(
    deal_id: UUID,
    connection: ReadConnectionDep,
    services: ServicesDep,
    service: ServiceDep,
    as_of: AsOf = None,
    min_position: MinPosition = None,
) -> DealFlags:
    rules = services.flag_rules
    found = await snapshots.deal_flags(connection, service, rules, deal_id, as_of)
    return DealFlags(deal_id=deal_id, as_of=as_of, flags=[_out(item) for item in found])


@router.get(
    "/flags",
    summary="Open flags across deals, oldest first; filter by kind, severity, owner, stage",
    dependencies=[Depends(require("team")), Depends(projected("flags"))],
    responses=CSV_RESPONSE,
)
async def list_flags(
    request: Request,
    connection: ReadConnectionDep,
    services: ServicesDep,
    service: ServiceDep,
    kind: FlagKind | None = None,
    severity: Literal["warning", "critical"] | None = None,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    stage: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    as_of: AsOf = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    format: PageFormat = None,
    min_position: MinPosition = None,
) -> FlagPage:
    after = decode_cursor(cursor, "t", "d", "k")
    if after and not (
        0 <= after["k"] < len(KINDS) and abs(after["t"]) < 2**53 and 0 <= after["d"] < 2**128
    ):
        raise InvalidRequest("cursor is not valid: use next_cursor from a previous page")
    start = (after["t"], after["d"], KINDS[after["k"]]) if after else FIRST_KEY
    where = FlagFilter(kind, severity, owner, stage)
    flags = await snapshots.standing_flags(
        connection, service, services.flag_rules, as_of, where, start, limit + 1
    )
    page = flags[:limit]
    if wants_csv(request, format):
        return csv_response(  # type: ignore[return-value]
            [_out(item).model_dump(mode="json") for item in page], list(FlagOut.model_fields)
        )
    last = flag_key(page[-1].flag) if page else None
    return FlagPage(
        as_of=as_of,
        items=[_out(item) for item in page],
        next_cursor=encode_cursor({"t": last[0], "d": last[1], "k": KINDS.index(last[2])})
        if len(flags) > limit and last
        else None,
    )
