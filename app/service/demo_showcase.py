"""What `dealledger demo` adds to its generated months so a newcomer sees every flag and
every pipeline red flag at once: a few scripted deals (each a textbook case of one problem),
a share of deals their reps stopped working, and quarterly targets that the pipeline does
not cover. Deterministic: the same end time gives the same script."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

import asyncpg

from app.domain import commands as c
from app.domain.decide import Actor
from app.domain.periods import Period
from app.projections.targets import set_target
from app.service.simulation import MANAGER, OWNERS, Step

DAY = timedelta(days=1)
NEGLECTED_SHARE = 0.45
"""Deals whose rep stops working them a few weeks in: the stale part of any real pipeline."""
QUARTER_TARGET = Decimal(1_500_000)
_NAMESPACE = uuid.UUID("6f0c1a52-3b7e-4c55-9f0e-2d8e6a4b7c10")


def _id(name: str) -> UUID:
    return uuid.uuid5(_NAMESPACE, name)


def showcase(end: datetime) -> list[Step]:
    """The scripted deals' commands, each at its time before `end`."""
    steps: list[tuple[timedelta, str, c.Command, Actor | None]] = []

    def at(days_before: float, deal: str, command: c.Command, actor: Actor | None = None) -> None:
        steps.append((days_before * DAY, deal, command, actor))

    def opened(days_before: float, deal: str, owner: str, amount: int, close_in: int) -> None:
        close = (end + close_in * DAY).date()
        at(
            days_before,
            deal,
            c.OpenDeal(deal, owner, f"{deal} account", Decimal(amount), "USD", close),
        )

    def touch(days_before: float, deal: str) -> None:
        when = end - days_before * DAY
        at(days_before, deal, c.RecordBuyerActivity("email_replied", when, {"system": "gmail"}))

    # A dead lead: no buyer touch for 75 days, nothing planned, its close date gone by.
    opened(80, "Quiet Harbor", OWNERS[0], 60_000, -15)
    touch(75, "Quiet Harbor")
    at(74.9, "Quiet Harbor", c.CompleteNextStep())
    # Ghosting: a buyer who answered every two days, then not for three weeks.
    opened(30, "Silent Peak", OWNERS[1], 80_000, 40)
    for days in (30, 28, 26, 24):
        touch(days, "Silent Peak")
    # Parked in nurture until a week ago, and nobody picked it up.
    opened(60, "Parked Pine", OWNERS[2], 45_000, 90)
    at(50, "Parked Pine", c.NurtureDeal("budget next year", (end - 7 * DAY).date()))
    # Advanced on evidence that was retracted afterwards.
    opened(40, "Retraction Row", OWNERS[3], 120_000, 60)
    proof = _id("Retraction Row evidence")
    criteria = (
        "budget_confirmed",
        "decision_maker_identified",
        "pain_documented",
        "timeline_committed",
    )
    at(
        39,
        "Retraction Row",
        c.RecordEvidence(proof, "meeting_notes", criteria, "discovery call notes", end - 39 * DAY),
    )
    at(38, "Retraction Row", c.AdvanceStage("qualification"))
    at(30, "Retraction Row", c.RetractEvidence(proof, "the budget was never approved"))
    # A blocker open for three weeks and a next step overdue.
    opened(25, "Blocked Bay", OWNERS[4], 95_000, 45)
    at(
        20,
        "Blocked Bay",
        c.RaiseBlocker(
            _id("Blocked Bay blocker"), "internal_politics", "two departments both claim the budget"
        ),
    )
    at(19, "Blocked Bay", c.SetNextStep("Meet both department heads", (end - 5 * DAY).date()))
    # Pushed into proposal 50 days ago on overrides; then its economic buyer left.
    opened(55, "Lost Sponsor", OWNERS[0], 200_000, 30)
    sponsor = _id("Lost Sponsor economic buyer")
    at(55, "Lost Sponsor", c.AddStakeholder(sponsor, "Erin Ortiz", "economic_buyer"))
    at(50, "Lost Sponsor", c.AdvanceStage("qualification", override_reason="board deal"), MANAGER)
    at(49.9, "Lost Sponsor", c.AdvanceStage("proposal", override_reason="board deal"), MANAGER)
    at(10, "Lost Sponsor", c.StakeholderLeaves(sponsor))

    owners = {
        deal: command.owner for _, deal, command, _ in steps if isinstance(command, c.OpenDeal)
    }
    return [
        Step(end - before, n, _id(deal), command, actor or Actor(owners[deal], "rep"))
        for n, (before, deal, command, actor) in enumerate(steps)
    ]


async def set_quarter_targets(connection: asyncpg.Connection, end: datetime) -> Period:
    """Each demo owner's target for the quarter of `end` (more than its pipeline covers)."""
    period = Period.quarter_of(end.date())
    for owner in OWNERS:
        await set_target(connection, owner, period.label, QUARTER_TARGET, "USD", MANAGER.id)
    return period
