"""Pipeline health and sales targets over HTTP (the rules: app.domain.pipeline_health)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from app.api.auth import require
from app.api.csv_format import CSV_RESPONSE, TableFormat, csv_response, wants_csv
from app.api.deps import (
    ConnectionDep,
    MinPosition,
    ReadConnectDep,
    ReadConnectionDep,
    ServiceDep,
    ServicesDep,
    projected,
)
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT
from app.api.schemas import IsoTime
from app.domain.decide import Actor
from app.domain.periods import Period
from app.domain.pipeline_health import HealthRules
from app.projections.targets import set_target
from app.service.pipeline_health import pipeline_health
from app.settings import Settings

router = APIRouter(prefix="/v1", tags=["pipeline health"])
PeriodText = Annotated[
    str, Path(description='A quarter ("2026-Q3") or a month ("2026-11")', max_length=7)
]


def health_rules_of(settings: Settings) -> HealthRules:
    return HealthRules(
        concentration_share=settings.health_concentration_share,
        stale_days=settings.health_stale_days,
        stale_share=settings.health_stale_share,
        dead_days=settings.health_dead_days,
    )


class StageHealthOut(BaseModel):
    stage: str
    deals: int
    value: Decimal
    weighted: Decimal
    deal_share: float
    value_share: float
    expected_days: int | None
    mean_age_days: float
    """Days in the stage so far, averaged over its open deals."""
    p90_age_days: float


class FindingOut(BaseModel):
    rule: str
    stage: str | None
    explanation: str
    numbers: dict[str, Any]
    deal_count: int
    """How many open deals the rule found."""
    deal_ids: list[UUID]
    """The first `limit` of them, the most overdue first (the largest first for early
    stages and coverage)."""


class Action(BaseModel):
    method: str
    href: str
    body: dict[str, Any]


class DeadLeadOut(BaseModel):
    deal_id: UUID
    name: str
    owner: str
    stage: str
    amount: Decimal | None
    last_buyer_activity_at: datetime | None
    days_without_buyer_touch: float
    actions: dict[str, Action]
    """One call each to clear it: `disqualify` or `nurture` (edit the body as you see fit)."""


class TargetOut(BaseModel):
    owner: str
    period: str
    amount: Decimal
    currency: str | None
    set_at: datetime
    set_by: str


class PipelineHealth(BaseModel):
    as_of: datetime
    period: str
    open_deals: int
    open_value: Decimal
    herfindahl: float = Field(description="Sum of squared value shares over stages (0 to 1)")
    stages: list[StageHealthOut]
    findings: list[FindingOut]
    """The red flags standing, each with its rule, numbers and deals."""
    dead_leads: list[DeadLeadOut]
    """The first `limit` dead leads, the longest without a buyer touch first (the
    dead_leads finding counts them all)."""
    targets: list[TargetOut]


@router.get(
    "/pipeline/health",
    summary="Pipeline red flags: concentration, thin early pipeline, staleness, aging, long"
    " stays, dead leads, coverage",
    dependencies=[Depends(require("team")), Depends(projected("deals", "stage_intervals"))],
    responses=CSV_RESPONSE,
)
async def get_pipeline_health(
    request: Request,
    connection: ReadConnectionDep,
    connect: ReadConnectDep,
    service: ServiceDep,
    services: ServicesDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    pipeline: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    period: Annotated[
        str | None, Query(max_length=7, description="Coverage period (default: as_of's quarter)")
    ] = None,
    concentration_share: Annotated[
        float | None, Query(gt=0, le=1, description="Override the configured 0.40")
    ] = None,
    as_of: Annotated[
        IsoTime | None, Query(description="As it stood then (replays every deal)")
    ] = None,
    format: Annotated[TableFormat | None, Query(description="csv: the findings")] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Deals named per finding and dead leads listed")
    ] = DEFAULT_LIMIT,
    min_position: MinPosition = None,
) -> PipelineHealth:
    rules = health_rules_of(services.settings)
    if concentration_share is not None:
        rules = replace(rules, concentration_share=concentration_share)
    report = await pipeline_health(
        connection,
        service,
        rules,
        as_of=as_of,
        owner=owner,
        pipeline=pipeline,
        period=Period.parse(period) if period else None,
        listed=limit,
        connect=connect,
    )
    health = report.health
    if wants_csv(request, format):
        return csv_response(  # type: ignore[return-value]
            [
                {
                    "rule": f.rule,
                    "stage": f.stage,
                    "explanation": f.explanation,
                    "numbers": f.numbers,
                    "deal_count": f.deals.count,
                    "deal_ids": [str(i) for i in f.deals.ids],
                }
                for f in health.findings
            ],
            ["rule", "stage", "explanation", "numbers", "deal_count", "deal_ids"],
        )
    return PipelineHealth(
        as_of=report.as_of,
        period=report.period.label,
        open_deals=health.open_deals,
        open_value=health.open_value,
        herfindahl=health.herfindahl,
        stages=[StageHealthOut.model_validate(s, from_attributes=True) for s in health.stages],
        findings=[
            FindingOut(
                rule=f.rule,
                stage=f.stage,
                explanation=f.explanation,
                numbers=f.numbers,
                deal_count=f.deals.count,
                deal_ids=list(f.deals.ids),
            )
            for f in health.findings
        ],
        dead_leads=[
            DeadLeadOut(
                deal_id=d.deal_id,
                name=d.name,
                owner=d.owner,
                stage=d.stage,
                amount=d.amount,
                last_buyer_activity_at=d.last_buyer_activity_at,
                days_without_buyer_touch=round(
                    (report.as_of - (d.last_buyer_activity_at or d.opened_at)).total_seconds()
                    / 86_400,
                    2,
                ),
                actions=_clear_actions(d.deal_id, report.as_of.date()),
            )
            for d in report.dead_leads
        ],
        targets=[TargetOut.model_validate(t, from_attributes=True) for t in report.targets],
    )


def _clear_actions(deal_id: UUID, today: date) -> dict[str, Action]:
    resume = date.fromordinal(today.toordinal() + 90)
    return {
        "disqualify": Action(
            method="POST",
            href=f"/v1/deals/{deal_id}/disqualify",
            body={"reason": "will_not_buy", "note": "dead lead: no buyer touch"},
        ),
        "nurture": Action(
            method="POST",
            href=f"/v1/deals/{deal_id}/nurture",
            body={"reason": "dead lead: no buyer touch", "resume_on": resume.isoformat()},
        ),
    }


class TargetBody(BaseModel):
    amount: Decimal = Field(ge=0, le=Decimal("1e15"))
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None


@router.put(
    "/targets/{owner}/{period}",
    summary="Set what an owner should win in a period (coverage is judged against it)",
)
async def put_target(
    owner: Annotated[str, Path(min_length=1, max_length=200)],
    period: PeriodText,
    body: TargetBody,
    connection: ConnectionDep,
    actor: Annotated[Actor, Depends(require("targets:write"))],
) -> TargetOut:
    parsed = Period.parse(period)
    target = await set_target(connection, owner, parsed.label, body.amount, body.currency, actor.id)
    return TargetOut.model_validate(target, from_attributes=True)
