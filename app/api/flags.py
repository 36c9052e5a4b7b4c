"""Flags over HTTP: one deal's (with history), and the team's open ones, filtered."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from app.api.auth import require
from app.api.deps import READ, MinPosition, ServiceDep, get_services, projected
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.schemas import IsoTime
from app.db import driver_connection
from app.domain.errors import DealNotFound
from app.domain.flags import KINDS, FlagKind, Subject, advance, evaluate
from app.domain.state import DealState
from app.events.recorded import to_recorded
from app.projections.flags import SUBJECT, subject_of
from app.service.deals import DealService

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


async def subject_as_of(service: DealService, deal_id: UUID, as_of: datetime) -> Subject:
    """The deal's flag subject from its events recorded up to `as_of` (replayed)."""
    subject = Subject(DealState(deal_id=deal_id))
    for event in await service.store.read_stream(deal_id, recorded_up_to=as_of):
        subject = advance(subject, to_recorded(event))
    return subject


def _out(deal_id: UUID, state: DealState, row: dict[str, Any]) -> FlagOut:
    return FlagOut(
        deal_id=deal_id,
        owner=state.owner,
        stage=state.stage,
        deal_name=state.name,
        **row,
    )


@router.get(
    "/deals/{deal_id}/flags",
    summary="A deal's flags: open and cleared (read model), or those standing at as_of",
    dependencies=[READ, Depends(projected("flags"))],
)
async def deal_flags(
    deal_id: UUID,
    request: Request,
    service: ServiceDep,
    as_of: AsOf = None,
    min_position: MinPosition = None,
) -> DealFlags:
    if as_of is not None:
        subject = await subject_as_of(service, deal_id, as_of)
        if not subject.state.exists:
            raise DealNotFound(f"deal {deal_id} did not exist then")
        rules = get_services(request).flag_rules
        flags = [
            _out(deal_id, subject.state, {**vars(flag), "cleared_at": None})
            for flag in evaluate(subject, as_of, rules)
        ]
        return DealFlags(deal_id=deal_id, as_of=as_of, flags=flags)
    async with driver_connection(get_services(request).engine) as connection:
        stored = await subject_of(connection, deal_id)
        rows = await connection.fetch(
            "SELECT kind, severity, raised_at, cleared_at, numbers::text AS numbers"
            " FROM deal_flags WHERE deal_id = $1 ORDER BY raised_at, kind",
            deal_id,
        )
    if stored is None:
        raise DealNotFound(f"deal {deal_id} does not exist")
    return DealFlags(
        deal_id=deal_id,
        as_of=None,
        flags=[_out(deal_id, stored.state, _row(r)) for r in rows],
    )


def _row(record: Any) -> dict[str, Any]:
    row = dict(record)
    row["numbers"] = json.loads(row["numbers"])
    return row


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _key(flag: FlagOut) -> tuple[int, int, str]:
    micros = (flag.raised_at - EPOCH) // timedelta(microseconds=1)
    return micros, flag.deal_id.int, flag.kind


@router.get(
    "/flags",
    summary="Open flags across deals, oldest first; filter by kind, severity, owner, stage",
    dependencies=[Depends(require("team")), Depends(projected("flags"))],
)
async def list_flags(
    request: Request,
    service: ServiceDep,
    kind: FlagKind | None = None,
    severity: Literal["warning", "critical"] | None = None,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    stage: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    as_of: AsOf = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    min_position: MinPosition = None,
) -> FlagPage:
    after = decode_cursor(cursor, "t", "d", "k")
    if after and not (
        0 <= after["k"] < len(KINDS) and abs(after["t"]) < 2**53 and 0 <= after["d"] < 2**128
    ):
        raise HTTPException(422, "cursor is not valid: use next_cursor from a previous page")
    start = (after["t"], after["d"], KINDS[after["k"]]) if after else (-(2**53), -1, "")
    flags: list[FlagOut] = []
    async with driver_connection(get_services(request).engine) as connection:
        if as_of is None:
            rows = await connection.fetch(
                "SELECT f.deal_id, f.kind, f.severity, f.raised_at, f.cleared_at,"
                " f.numbers::text AS numbers, s.subject::text AS subject"
                " FROM deal_flags f JOIN flag_subjects s USING (deal_id)"
                " WHERE f.cleared_at IS NULL"
                " AND ($1::text IS NULL OR f.kind = $1) AND ($2::text IS NULL OR f.severity = $2)"
                " AND ($3::text IS NULL OR s.owner = $3) AND ($4::text IS NULL OR s.stage = $4)"
                ' AND (f.raised_at, f.deal_id, f.kind COLLATE "C")'
                " > ('epoch'::timestamptz + $5::bigint * interval '1 microsecond',"
                ' $6::uuid, $7::text COLLATE "C")'
                ' ORDER BY f.raised_at, f.deal_id, f.kind COLLATE "C" LIMIT $8',
                kind,
                severity,
                owner,
                stage,
                start[0],
                UUID(int=max(start[1], 0)),
                start[2],
                limit + 1,
            )
            for r in rows:
                state = SUBJECT.validate_json(r["subject"]).state
                row = _row(r)
                del row["subject"], row["deal_id"]
                flags.append(_out(r["deal_id"], state, row))
        else:
            rules = get_services(request).flag_rules
            stored = await connection.fetch(
                "SELECT deal_id, last_recorded_at, subject::text AS subject FROM flag_subjects"
            )
            for r in stored:
                if r["last_recorded_at"] <= as_of:
                    subject = SUBJECT.validate_json(r["subject"])
                else:
                    subject = await subject_as_of(service, r["deal_id"], as_of)
                state = subject.state
                if not state.exists or (owner and state.owner != owner):
                    continue
                if stage and state.stage != stage:
                    continue
                for flag in evaluate(subject, as_of, rules):
                    if (kind and flag.kind != kind) or (severity and flag.severity != severity):
                        continue
                    flags.append(_out(r["deal_id"], state, {**vars(flag), "cleared_at": None}))
    flags = sorted((f for f in flags if _key(f) > start), key=_key)
    page = flags[:limit]
    more = len(flags) > limit
    last = _key(page[-1]) if page else None
    return FlagPage(
        as_of=as_of,
        items=page,
        next_cursor=encode_cursor({"t": last[0], "d": last[1], "k": KINDS.index(last[2])})
        if more and last
        else None,
    )
