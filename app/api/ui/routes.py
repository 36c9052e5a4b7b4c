"""The pages under /ui: sign-in, the board, a deal's story, the flags inbox.

Server-rendered (Jinja2, autoescaped) from the same read models and services as the API;
no JavaScript is needed to read anything. A page is read-only for every role: changes go
through the API, where each command is judged and recorded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import asyncpg
import jinja2
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.api.auth import DEV_ACTOR, PERMISSIONS
from app.api.deps import (
    ConnectionDep,
    ReadConnectDep,
    ReadConnectionDep,
    ServiceDep,
    ServicesDep,
    StoreDep,
)
from app.api.pipeline_health import health_rules_of
from app.api.state import app_state
from app.api.ui.sessions import (
    COOKIE,
    LIFETIME,
    SIGN_IN_ROLES,
    end_session,
    session_actor,
    start_session,
)
from app.db import side_by_side
from app.domain.decide import Actor
from app.domain.errors import DealNotFound
from app.domain.explanations import explain
from app.domain.flags import KINDS
from app.domain.pipeline import Pipeline
from app.domain.state import DealState
from app.keys import find_key
from app.projections import analytics
from app.projections.deals import BoardDeal, BoardStep, board_of
from app.projections.deals import board as board_now
from app.projections.deals import owners as deal_owners
from app.projections.flags import FIRST_KEY, FlagFilter
from app.projections.stage_intervals import intervals_of
from app.service import snapshots
from app.service.integrity import check_deal
from app.service.pipeline_health import HealthReport, pipeline_health

HERE = Path(__file__).parent
templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is text: a deal named <script> is shown, never run
        undefined=jinja2.StrictUndefined,
    )
)
router = APIRouter(prefix="/ui", include_in_schema=False)
CARDS_PER_COLUMN = 60
"""Cards a column draws at most, the slowest first (the rest are counted, not drawn)."""


def _page(
    request: Request, name: str, actor: Actor | None, status: int = 200, **context: Any
) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"actor": actor, **context}, status_code=status
    )


async def _signed_in(request: Request, connection: ConnectionDep) -> Actor | None:
    actor = await session_actor(connection, request.cookies.get(COOKIE))
    if actor is None and app_state(request.scope.get("state", {})).settings.dev_mode:
        return DEV_ACTOR  # serve --dev: anonymous reads as admin, as in the API
    return actor


def _to_login() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None, error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request, connection: ConnectionDep, key: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    found = await find_key(connection, key.strip()) if key.strip() else None
    if found is None:
        return _page(request, "login.html", None, 401, error="Unknown or revoked API key.")
    if found.role not in SIGN_IN_ROLES:
        return _page(
            request, "login.html", None, 403, error="An ingest key cannot sign in to the pages."
        )
    token = await start_session(connection, found)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(LIFETIME.total_seconds()),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, connection: ConnectionDep) -> RedirectResponse:
    await end_session(connection, request.cookies.get(COOKIE))
    response = _to_login()
    response.delete_cookie(COOKIE, path="/ui")
    return response


def _board_deal(state: DealState, flags: tuple[str, ...]) -> BoardDeal:
    step = state.next_step
    return BoardDeal(
        state.deal_id, state.name, state.account, state.owner, state.stage, state.amount,
        state.currency, state.stage_entered_at,
        BoardStep(step.description, step.due_date) if step else None, flags,
    )  # fmt: skip


@dataclass
class Card:
    state: BoardDeal
    days_in_stage: float | None
    expected_days: int
    flags: list[str]

    @property
    def ratio(self) -> float:
        if self.days_in_stage is None or not self.expected_days:
            return 0.0
        return self.days_in_stage / self.expected_days

    @property
    def bar(self) -> str:
        return "red" if self.ratio >= 2 else "amber" if self.ratio >= 1.5 else "green"


@dataclass
class Column:
    key: str
    label: str
    probability: float
    cards: list[Card]
    total: int
    """Every deal in the column: its cards are the first of them, the slowest."""
    amounts: dict[str, Decimal]
    """Their amounts by currency, drawn or not."""

    @property
    def weighted(self) -> dict[str, Decimal]:
        return {
            currency: (amount * Decimal(str(self.probability))).quantize(Decimal("1"))
            for currency, amount in self.amounts.items()
        }


def _end_of(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=UTC)


@router.get("", response_class=HTMLResponse)
async def board(
    request: Request,
    connection: ReadConnectionDep,
    service: ServiceDep,
    services: ServicesDep,
    pipeline: Annotated[str, Query(max_length=100)] = "default",
    owner: Annotated[str | None, Query(max_length=200)] = None,
    flag: Annotated[str | None, Query(max_length=100)] = None,
    as_of: Annotated[str | None, Query(max_length=40, description="A day, YYYY-MM-DD")] = None,
) -> Response:
    actor = await _signed_in(request, connection)
    if actor is None:
        return _to_login()
    owner, flag = owner or None, flag or None
    # A form sends every field, empty ones too: an empty day is "today".
    try:
        day = date.fromisoformat(as_of) if as_of else None
    except ValueError:
        return _page(request, "missing.html", actor, 422, what=f"Not a day: {as_of}.")
    shown = await service.latest_pipeline(pipeline)
    if shown is None:
        return _page(request, "missing.html", actor, 404, what=f"No pipeline {pipeline}.")
    moment = _end_of(day) if day else None
    now = moment or datetime.now(UTC)
    stages = [s.key for s in shown.stages]
    if moment is None:  # now: from the read models, only the cards drawn
        board = await board_now(connection, pipeline, stages, owner, flag, CARDS_PER_COLUMN)
    else:  # a past day: every deal replayed to its end, and the flags standing then
        flags = await _open_flags(connection, service, services, moment)
        deals = [
            _board_deal(s, tuple(sorted(flags.get(s.deal_id, ()))))
            for s in await snapshots.deal_states(
                connection, service, moment, owner=owner, status="open"
            )
            if s.pipeline_key == pipeline
        ]  # fmt: skip
        board = board_of(deals, stages, flag, CARDS_PER_COLUMN)
    columns = []
    for stage in shown.stages:
        column = board[stage.key]
        cards = []
        for deal in column.first:  # the longest in the stage first: the highest ratio
            entered = deal.stage_entered_at
            days = (now - entered).total_seconds() / 86_400 if entered else None
            cards.append(Card(deal, days, stage.expected_days, list(deal.flags)))
        columns.append(
            Column(
                stage.key,
                stage.label,
                stage.probability,
                cards,
                column.deals,
                dict(sorted(column.amounts.items())),
            )
        )
    owners = await deal_owners(connection)
    return _page(
        request,
        "board.html",
        actor,
        pipeline=shown,
        pipelines=await service.pipeline_keys(),
        columns=columns,
        owner=owner,
        owners=owners,
        flag=flag,
        kinds=KINDS,
        as_of=day,
    )


async def _open_flags(
    connection: ConnectionDep, service: ServiceDep, services: ServicesDep, at: datetime | None
) -> dict[UUID, set[str]]:
    found: dict[UUID, set[str]] = defaultdict(set)
    items = await snapshots.standing_flags(
        connection, service, services.flag_rules, at, FlagFilter(), FIRST_KEY, 100_000
    )
    for item in items:
        found[item.flag.deal_id].add(item.flag.kind)
    return found


@router.get("/flags", response_class=HTMLResponse)
async def flags_inbox(
    request: Request,
    connection: ReadConnectionDep,
    service: ServiceDep,
    services: ServicesDep,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    severity: Annotated[str | None, Query(max_length=20)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    actor = await _signed_in(request, connection)
    if actor is None:
        return _to_login()
    if actor.role not in PERMISSIONS["team"]:
        return _page(
            request,
            "missing.html",
            actor,
            403,
            what="The team's flags are for managers and auditors.",
        )
    where = FlagFilter(kind or None, severity or None, owner or None, None)
    items = await snapshots.standing_flags(
        connection, service, services.flag_rules, None, where, FIRST_KEY, 500
    )
    items = sorted(items, key=lambda item: item.flag.raised_at)
    rows = [
        {
            "flag": item.flag,
            "deal": item.state,
            "explanation": explain(item.flag.kind, item.flag.numbers, item.state.stage),
        }
        for item in items
    ]
    return _page(
        request, "flags.html", actor, rows=rows, kinds=KINDS, kind=kind or None,
        severity=severity or None, owner=owner or None,
    )  # fmt: skip


@dataclass(frozen=True)
class StageTime:
    stage: str
    label: str
    expected: int
    median: float | None
    count: int


@dataclass(frozen=True)
class Analysed:
    """What the insights page reads beside pipeline health."""

    medians: dict[str, analytics.Durations]
    conversion: list[analytics.StageConversion]
    regressions: list[analytics.StageRegressions]
    disqualified: analytics.Disqualifications
    forecast: snapshots.Forecast


@router.get("/insights", response_class=HTMLResponse)
async def insights(
    request: Request,
    connection: ReadConnectionDep,
    connect: ReadConnectDep,
    service: ServiceDep,
    services: ServicesDep,
    pipeline: Annotated[str, Query(max_length=100)] = "default",
    owner: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Where time goes and deals leak, what the pipeline is worth, and its red flags."""
    actor = await _signed_in(request, connection)
    if actor is None:
        return _to_login()
    if actor.role not in PERMISSIONS["team"]:
        return _page(request, "missing.html", actor, 403, what="Insights are for the team.")
    owner = owner or None
    shown = await service.latest_pipeline(pipeline)
    if shown is None:
        return _page(request, "missing.html", actor, 404, what=f"No pipeline {pipeline}.")
    f = analytics.Filters(
        owner, pipeline, None, None, None, services.settings.size_bands,
        stage_keys=shown.stage_keys,
    )  # fmt: skip

    async def health(own: asyncpg.Connection) -> HealthReport:
        rules = health_rules_of(services.settings)
        return await pipeline_health(
            own, service, rules, as_of=None, owner=owner, pipeline=pipeline, period=None
        )

    async def analysed(other: asyncpg.Connection) -> Analysed:
        return Analysed(
            {d.stage: d for d in await analytics.durations(other, f, None)},
            await analytics.conversion(other, f),
            await analytics.regressions(other, f),
            await analytics.disqualifications(other, f),
            await snapshots.forecast(other, service, None, owner=owner),
        )

    # Two halves of about equal cost, on two connections when the pool has one to spare.
    report, found = await side_by_side(connection, connect, health, analysed)
    medians = found.medians
    times = [
        StageTime(
            stage.key,
            stage.label,
            stage.expected_days,
            medians[stage.key].median_days if stage.key in medians else None,
            medians[stage.key].count if stage.key in medians else 0,
        )
        for stage in shown.stages
    ]
    widest = max([t.expected for t in times] + [t.median or 0 for t in times]) or 1
    return _page(
        request,
        "insights.html",
        actor,
        pipeline=shown,
        owner=owner,
        times=times,
        widest=widest,
        conversion=found.conversion,
        regressions=found.regressions,
        disqualified=found.disqualified,
        forecast=found.forecast,
        health=report.health,
    )


@router.get("/deals/{deal_id}", response_class=HTMLResponse)
async def deal_page(
    request: Request,
    deal_id: UUID,
    connection: ReadConnectionDep,
    service: ServiceDep,
    services: ServicesDep,
    store: StoreDep,
) -> Response:
    actor = await _signed_in(request, connection)
    if actor is None:
        return _to_login()
    state = await service.load(deal_id)
    if not state.exists:
        return _page(request, "missing.html", actor, 404, what="No such deal.")
    pipeline = await service.pipeline_of(state)
    verdict = await check_deal(store, connection, deal_id, services.verifier)
    stored = verdict.events  # the stream as check_deal read it: not read a second time
    evidence = {
        event.data.get("evidence_id"): {
            "event": event,
            "by": (event.metadata.get("actor") or {}).get("name")
            or (event.metadata.get("actor") or {}).get("id"),
        }
        for event in stored
        if event.type == "EvidenceRecorded"
    }
    criteria = _criteria(state, pipeline, evidence)
    try:
        deal_flags = await snapshots.deal_flags(
            connection, service, services.flag_rules, deal_id, None
        )
    except DealNotFound:
        deal_flags = []
    intervals = await intervals_of(connection, deal_id)
    now = datetime.now(UTC)
    stays = [
        Stay(i.stage, ((i.left_at or now) - i.entered_at).total_seconds() / 86_400, i.left_how)
        for i in intervals
    ]
    longest = max((stay.days for stay in stays), default=0.0) or 1.0
    return _page(
        request,
        "deal.html",
        actor,
        deal=state,
        pipeline=pipeline,
        criteria=criteria,
        timeline=stored,
        flags=[(f.flag, explain(f.flag.kind, f.flag.numbers, f.state.stage)) for f in deal_flags],
        stays=stays,
        longest=longest,
        verdict=verdict,
        stage_changes=STAGE_CHANGES,
    )


@dataclass(frozen=True)
class Stay:
    stage: str
    days: float
    how: str | None


STAGE_CHANGES = frozenset(
    {"StageAdvanced", "StageRegressed", "DealWon", "DealDisqualified", "DealNurtured",
     "DealReactivated", "DealMigrated"}
)  # fmt: skip


def _criteria(
    state: DealState, pipeline: Pipeline, evidence: dict[Any, dict[str, Any]]
) -> list[dict[str, Any]]:
    if state.stage not in pipeline.stage_keys:
        return []
    out = []
    for criterion in pipeline.stage(state.stage).exit_criteria:
        behind = [evidence[str(i)] for i in state.evidence_for(criterion.key) if str(i) in evidence]
        out.append({"criterion": criterion, "met": bool(behind), "evidence": behind})
    return out
