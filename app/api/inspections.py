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
from app.api.deps import ConnectionDep, MinPosition, ServiceDep, ServicesDep, projected
from app.api.schemas import IsoTime
from app.domain.explanations import explain
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
    deals: list[DealReviewOut]


def _weekly_out(report: inspections.WeeklyReport) -> WeeklyInspection:
    return WeeklyInspection(
        as_of=report.as_of,
        since=report.since,
        owner=report.owner,
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
        f"Week {report.since:%Y-%m-%d} to {report.as_of:%Y-%m-%d}: {len(report.deals)} deals"
        " moved, stalled or flagged.",
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
    dependencies=[Depends(projected("flags"))],
    responses=MARKDOWN,  # type: ignore[arg-type]
)
async def weekly(
    connection: ConnectionDep,
    service: ServiceDep,
    services: ServicesDep,
    owner: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    as_of: Annotated[IsoTime | None, Query(description="The week ending then")] = None,
    format: Format = "json",
    min_position: MinPosition = None,
) -> WeeklyInspection:
    report = await inspections.weekly(
        connection, service, services.flag_rules, as_of=as_of, owner=owner
    )
    out = _weekly_out(report)
    if format == "markdown":
        return Response(weekly_markdown(out), media_type="text/markdown")  # type: ignore[return-value]
    return out
