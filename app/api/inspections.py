"""Inspection reports over HTTP: JSON is the contract; ?format=markdown renders the same
report as a document a manager can paste into an email."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from app.api.auth import require
from app.api.deps import (
    MinPosition,
    ReadConnectDep,
    ReadConnectionDep,
    ServiceDep,
    ServicesDep,
    projected,
)
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.schemas import IsoTime
from app.domain.errors import InvalidRequest
from app.domain.explanations import explain
from app.domain.periods import Period
from app.service import inspections

router = APIRouter(
    prefix="/v1/inspections", tags=["inspections"], dependencies=[Depends(require("team"))]
)
Format = Literal["json", "markdown"]
MARKDOWN = {200: {"content": {"text/markdown": {}}, "description": "The report"}}


class FlagBrief(BaseModel):
    kind: str
    severity: str
    raised_at: datetime
    explanation: str
    numbers: dict[str, Any]


class QuestionOut(BaseModel):
    key: str
    question: str
    cites: dict[str, Any]
    """The data that raised it."""


class ChangeOut(BaseModel):
    version: int
    type: str
    recorded_at: datetime
    data: dict[str, Any]


class DealReviewOut(BaseModel):
    deal_id: UUID
    name: str
    owner: str
    stage: str
    amount: str | None
    why: list[Literal["moved", "stalled", "flagged"]]
    changes: list[ChangeOut]
    """The deal's events recorded in the week."""
    flags: list[FlagBrief]
    questions: list[QuestionOut]


class WeeklyInspection(BaseModel):
    as_of: datetime
    since: datetime
    owner: str | None
    total: int
    """Deals that moved, stalled or are flagged, on every page."""
    deals: list[DealReviewOut]
    """This page of them, by owner and name."""
    next_cursor: str | None


def _weekly_out(report: inspections.WeeklyReport, next_cursor: str | None) -> WeeklyInspection:
    return WeeklyInspection(
        as_of=report.as_of,
        since=report.since,
        owner=report.owner,
        total=report.total,
        next_cursor=next_cursor,
        deals=[
            DealReviewOut(
                deal_id=r.state.deal_id,
                name=r.state.name,
                owner=r.state.owner,
                stage=r.state.stage,
                amount=format(r.state.amount, "f") if r.state.amount is not None else None,
                why=r.why,
                changes=[ChangeOut.model_validate(c, from_attributes=True) for c in r.changes],
                flags=[
                    FlagBrief(
                        kind=f.kind,
                        severity=f.severity,
                        raised_at=f.raised_at,
                        explanation=explain(f.kind, f.numbers, r.state.stage),
                        numbers=f.numbers,
                    )
                    for f in r.flags
                ],
                questions=[
                    QuestionOut.model_validate(q, from_attributes=True) for q in r.questions
                ],
            )
            for r in report.deals
        ],
    )


def weekly_markdown(report: WeeklyInspection) -> str:
    lines = [
        f"# Weekly deal review{f' for {report.owner}' if report.owner else ''}",
        "",
        f"Week {report.since:%Y-%m-%d} to {report.as_of:%Y-%m-%d}: {report.total} deals"
        " moved, stalled or flagged"
        + (f" ({len(report.deals)} below; next page: cursor)." if report.next_cursor else "."),
    ]
    for deal in report.deals:
        lines += [
            "",
            f"## {deal.name} ({deal.stage}, {deal.owner}"
            f"{f', {deal.amount}' if deal.amount else ''})",
            "",
            f"Why it is here: {', '.join(deal.why)}. {len(deal.changes)} changes this week"
            + (": " + ", ".join(c.type for c in deal.changes) if deal.changes else "")
            + ".",
        ]
        if deal.flags:
            lines += ["", "Flags:"] + [
                f"- **{f.kind}** ({f.severity}): {f.explanation}" for f in deal.flags
            ]
        if deal.questions:
            lines += ["", "Questions:"] + [f"1. {q.question}" for q in deal.questions]
    return "\n".join(lines) + "\n"


@router.get(
    "/weekly",
    summary="Weekly review: each deal that moved, stalled or is flagged, with its changes,"
    " flags and coaching questions",
    dependencies=[Depends(projected("flags", "deals"))],
    responses=MARKDOWN,  # type: ignore[arg-type]
)
async def weekly(
    connection: ReadConnectionDep,
    connect: ReadConnectDep,
    service: ServiceDep,
    services: ServicesDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    as_of: Annotated[IsoTime | None, Query(description="The week ending then")] = None,
    format: Format = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    min_position: MinPosition = None,
) -> WeeklyInspection:
    after = decode_cursor(cursor, "i")
    start = after["i"] if after else 0
    if start < 0:
        raise InvalidRequest("cursor is not valid: use next_cursor from a previous page")
    report = await inspections.weekly(
        connection,
        service,
        services.flag_rules,
        as_of=as_of,
        owner=owner,
        start=start,
        limit=limit,
        connect=connect,
    )
    more = start + limit < report.total
    out = _weekly_out(report, encode_cursor({"i": start + limit}) if more else None)
    if format == "markdown":
        return Response(weekly_markdown(out), media_type="text/markdown")  # type: ignore[return-value]
    return out


class StageCalibrationOut(BaseModel):
    stage: str
    claimed_probability: float
    deals: int
    """Closed deals that were in the stage."""
    won: int
    observed_win_rate: float | None
    expected_days: int
    stays_measured: int
    observed_mean_days: float | None
    observed_median_days: float | None
    suggested_probability: float | None
    suggested_expected_days: int | None
    """Suggestions only: an admin applies them as a new pipeline version (PUT /v1/pipelines)."""


class QuarterlyInspection(BaseModel):
    period: str
    as_of: datetime
    pipeline: str
    pipeline_version: int
    deals: int
    """Deals closed (won or disqualified) in the quarter."""
    brier_score: float | None
    predictions: int
    stages: list[StageCalibrationOut]


def quarterly_markdown(report: QuarterlyInspection) -> str:
    lines = [
        f"# Quarterly calibration, {report.period} ({report.pipeline} v{report.pipeline_version})",
        "",
        f"{report.deals} deals closed; Brier score {report.brier_score} over"
        f" {report.predictions} stage predictions.",
        "",
        "| stage | claimed | observed (won/deals) | expected days | observed median days"
        " | suggested |",
        "|---|---|---|---|---|---|",
    ]
    for s in report.stages:
        observed = "-" if s.observed_win_rate is None else f"{s.observed_win_rate:.0%}"
        suggested = (
            f"{s.suggested_probability:.0%}, {s.suggested_expected_days} days"
            if s.suggested_probability is not None
            else "too few deals"
        )
        lines.append(
            f"| {s.stage} | {s.claimed_probability:.0%} | {observed} ({s.won}/{s.deals})"
            f" | {s.expected_days} | {s.observed_median_days or '-'} | {suggested} |"
        )
    return "\n".join(lines) + "\n"


@router.get(
    "/quarterly",
    summary="Quarterly calibration: claimed stage probabilities against observed win rates,"
    " Brier score, observed against expected days, suggested values (never applied)",
    dependencies=[Depends(projected("stage_intervals"))],
    responses=MARKDOWN,  # type: ignore[arg-type]
)
async def quarterly(
    connection: ReadConnectionDep,
    service: ServiceDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    pipeline: Annotated[str, Query(min_length=1, max_length=200)] = "default",
    period: Annotated[
        str | None, Query(max_length=7, description="A quarter (default: as_of's)")
    ] = None,
    as_of: Annotated[IsoTime | None, Query(description="Count what was recorded by then")] = None,
    format: Format = "json",
    min_position: MinPosition = None,
) -> QuarterlyInspection:
    report = await inspections.quarterly(
        connection,
        service,
        as_of=as_of,
        owner=owner,
        pipeline_key=pipeline,
        period=Period.parse(period) if period else None,
    )
    c = report.calibration
    out = QuarterlyInspection(
        period=report.period.label,
        as_of=report.as_of,
        pipeline=report.pipeline.key,
        pipeline_version=report.pipeline.version,
        deals=c.deals,
        brier_score=c.brier_score,
        predictions=c.predictions,
        stages=[StageCalibrationOut.model_validate(s, from_attributes=True) for s in c.stages],
    )
    if format == "markdown":
        return Response(quarterly_markdown(out), media_type="text/markdown")  # type: ignore[return-value]
    return out


class MonthConversion(BaseModel):
    entered: int
    moved_forward: int
    regressed: int
    to_next_rate: float | None
    to_won_rate: float | None


class MonthStageOut(BaseModel):
    stage: str
    expected_days: int | None
    this_month: MonthConversion | None
    previous_month: MonthConversion | None
    this_month_median_days: float | None
    """Median days of the stays begun this month that have finished."""
    previous_month_median_days: float | None


class BlockerCategoryOut(BaseModel):
    category: str
    open: int
    resolved: int
    median_days_to_resolve: float | None


class MonthlyInspection(BaseModel):
    month: str
    previous_month: str
    stages: list[MonthStageOut]
    regressions_by_trigger: dict[str, int]
    blockers: list[BlockerCategoryOut]


def monthly_markdown(report: MonthlyInspection) -> str:
    lines = [
        f"# Monthly stage review, {report.month} (against {report.previous_month})",
        "",
        "| stage | entered | to next | previous to next | median days | previous | expected |",
        "|---|---|---|---|---|---|---|",
    ]

    def rate(c: MonthConversion | None) -> str:
        return "-" if c is None or c.to_next_rate is None else f"{c.to_next_rate:.0%}"

    for s in report.stages:
        lines.append(
            f"| {s.stage} | {s.this_month.entered if s.this_month else 0} | {rate(s.this_month)}"
            f" | {rate(s.previous_month)} | {s.this_month_median_days or '-'}"
            f" | {s.previous_month_median_days or '-'} | {s.expected_days} |"
        )
    lines += [
        "",
        "Regressions by trigger: "
        + (", ".join(f"{k} {v}" for k, v in report.regressions_by_trigger.items()) or "none"),
    ]
    lines += [
        "",
        "Blockers: "
        + (", ".join(f"{b.category} {b.open} open" for b in report.blockers) or "none"),
    ]
    return "\n".join(lines) + "\n"


@router.get(
    "/monthly",
    summary="Monthly review: stage conversion and time in stage against last month and"
    " expectations, regressions by trigger, blockers by category",
    dependencies=[Depends(projected("stage_intervals", "deals", "blockers"))],
    responses=MARKDOWN,  # type: ignore[arg-type]
)
async def monthly(
    connection: ReadConnectionDep,
    connect: ReadConnectDep,
    service: ServiceDep,
    services: ServicesDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    pipeline: Annotated[str, Query(min_length=1, max_length=200)] = "default",
    as_of: Annotated[IsoTime | None, Query(description="The month containing it")] = None,
    format: Format = "json",
    min_position: MinPosition = None,
) -> MonthlyInspection:
    report = await inspections.monthly(
        connection,
        service,
        as_of=as_of,
        owner=owner,
        pipeline_key=pipeline,
        size_bands=services.settings.size_bands,
        connect=connect,
    )

    def conv(c: Any) -> MonthConversion | None:
        return None if c is None else MonthConversion.model_validate(c, from_attributes=True)

    out = MonthlyInspection(
        month=report.period.label,
        previous_month=report.previous.label,
        stages=[
            MonthStageOut(
                stage=s.stage,
                expected_days=s.expected_days,
                this_month=conv(s.this_month),
                previous_month=conv(s.previous_month),
                this_month_median_days=s.this_month_median_days,
                previous_month_median_days=s.previous_month_median_days,
            )
            for s in report.stages
        ],
        regressions_by_trigger=report.regressions_by_trigger,
        blockers=[
            BlockerCategoryOut.model_validate(b, from_attributes=True) for b in report.blockers
        ],
    )
    if format == "markdown":
        return Response(monthly_markdown(out), media_type="text/markdown")  # type: ignore[return-value]
    return out
