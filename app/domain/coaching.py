"""Coaching questions for a deal review, each raised by a gap in the deal and citing the
data that shows it. A deal with no gap gets no question. Pure: time is an input.

The six questions (from the inspection practice this product follows):
  ready_to_advance        What evidence says it is ready to advance?
  next_stage              What must happen for it to reach the next stage?
  missing_stakeholders    Who that matters have we not talked to?
  open_blockers           What could block it?
  economic_buyer_contact  When did we last talk to the economic buyer?
  close_risk              If it does not close on time, why?
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from app.domain import events as e
from app.domain.explanations import number
from app.domain.pipeline import ACTIVE, Pipeline
from app.domain.state import DealState, Recorded

DAY = timedelta(days=1)
QUESTIONS = (
    "ready_to_advance",
    "next_stage",
    "missing_stakeholders",
    "open_blockers",
    "economic_buyer_contact",
    "close_risk",
)


@dataclass(frozen=True)
class CoachingRules:
    economic_buyer_quiet_days: float = 14
    """Days without an activity with the economic buyer that raise the question."""


@dataclass(frozen=True)
class Question:
    key: str
    question: str
    cites: dict[str, Any]


def expected_roles(pipeline: Pipeline, stage: str) -> tuple[str, ...]:
    """The stakeholder roles a deal in `stage` should have met: a champion from the start;
    the economic buyer and decision maker once qualifying; a technical evaluator from the
    third stage; legal and procurement in the pipeline's late stages."""
    index = pipeline.index(stage)
    roles = ["champion"]
    if index >= 1:
        roles += ["economic_buyer", "decision_maker"]
    if index >= 2:
        roles.append("technical_evaluator")
    if stage in pipeline.late_stages:
        roles += ["legal", "procurement"]
    return tuple(roles)


def _involves(details: Mapping[str, Any], person: UUID, name: str) -> bool:
    """Whether an activity's details name the stakeholder (by id, or among attendees)."""
    ids = {str(details.get("stakeholder_id", ""))}
    attendees = details.get("attendees")
    if isinstance(attendees, list):
        ids |= {str(a) for a in attendees}
    return str(person) in ids or name in ids


def last_contact(history: Iterable[Recorded], state: DealState) -> dict[UUID, datetime]:
    """When each current stakeholder last took part in a buyer activity."""
    people = state.stakeholders
    seen: dict[UUID, datetime] = {}
    for recorded in history:
        event = recorded.event
        if not isinstance(event, e.BuyerActivityRecorded):
            continue
        for person in people.values():
            if _involves(event.details, person.stakeholder_id, person.name):
                previous = seen.get(person.stakeholder_id)
                if previous is None or event.occurred_at > previous:
                    seen[person.stakeholder_id] = event.occurred_at
    return seen


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _words(keys: Iterable[str]) -> str:
    words = [k.replace("_", " ") for k in keys]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def questions_for(
    state: DealState,
    pipeline: Pipeline,
    as_of: datetime,
    contacts: Mapping[UUID, datetime],
    rules: CoachingRules | None = None,
) -> list[Question]:
    """The coaching questions this open deal's gaps raise at `as_of`, in the order above."""
    rules = rules or CoachingRules()
    if state.status != ACTIVE or state.stage not in pipeline.stage_keys:
        return []
    stage = pipeline.stage(state.stage)
    index = pipeline.index(state.stage)
    found: list[Question] = []

    unmet = [c.key for c in stage.exit_criteria if not state.evidence_for(c.key)]
    if unmet:
        met = len(stage.exit_criteria) - len(unmet)
        found.append(
            Question(
                "ready_to_advance",
                f"What evidence says it is ready to advance? {met} of "
                f"{len(stage.exit_criteria)} exit criteria of {stage.key} are evidenced;"
                f" none for {_words(unmet)}.",
                {"stage": stage.key, "unmet_criteria": unmet, "met": met},
            )
        )

    later = pipeline.stages[index + 1] if index + 1 < len(pipeline.stages) else None
    target = later.key if later else "won"
    missing = state.missing_required_fields(pipeline, later.key) if later else []
    step = state.next_step
    overdue = step is not None and as_of >= _start_of(step.due_date + DAY)
    if missing or step is None or overdue:
        gaps = []
        if step is None:
            gaps.append("no next step is set")
        elif overdue:
            gaps.append(f'the next step "{step.description}" was due {step.due_date}')
        if missing:
            gaps.append(f"{target} needs {_words(missing)}")
        said = "; ".join(gaps)
        found.append(
            Question(
                "next_stage",
                f"What must happen for it to reach {target}? {said[0].upper()}{said[1:]}.",
                {
                    "next_stage": target,
                    "missing_required_fields": missing,
                    "next_step": step.description if step else None,
                    "next_step_due": step.due_date.isoformat() if step else None,
                },
            )
        )

    roles = {s.role for s in state.stakeholders.values()}
    absent = [role for role in expected_roles(pipeline, stage.key) if role not in roles]
    if absent:
        found.append(
            Question(
                "missing_stakeholders",
                f"Who that matters have we not talked to? No {_words(absent)} on a deal in "
                f"{stage.key}.",
                {"missing_roles": absent, "stage": stage.key},
            )
        )

    if state.blockers:
        blockers = sorted(state.blockers.values(), key=lambda b: b.raised_at)
        listed = [
            f"{b.category.replace('_', ' ')} ({number((as_of - b.raised_at) / DAY)} days)"
            for b in blockers
        ]
        found.append(
            Question(
                "open_blockers",
                f"What could block it? {len(blockers)} open blocker"
                f"{'s' if len(blockers) != 1 else ''}: {', '.join(listed)}.",
                {
                    "blockers": [
                        {
                            "blocker_id": str(b.blocker_id),
                            "category": b.category,
                            "days_open": round((as_of - b.raised_at) / DAY, 2),
                        }
                        for b in blockers
                    ]
                },
            )
        )

    buyers = [s for s in state.stakeholders.values() if s.role == "economic_buyer"]
    if buyers:
        heard = [contacts[b.stakeholder_id] for b in buyers if b.stakeholder_id in contacts]
        latest = max(heard, default=None)
        quiet = None if latest is None else (as_of - latest) / DAY
        if quiet is None or quiet >= rules.economic_buyer_quiet_days:
            when = "never" if quiet is None else f"{number(quiet)} days ago"
            found.append(
                Question(
                    "economic_buyer_contact",
                    f"When did we last talk to the economic buyer? {buyers[0].name}: {when}.",
                    {
                        "economic_buyer": buyers[0].name,
                        "last_contact_at": latest.isoformat() if latest else None,
                        "days_since": round(quiet, 2) if quiet is not None else None,
                        "threshold_days": rules.economic_buyer_quiet_days,
                    },
                )
            )

    if state.close_date is not None:
        in_stage = (as_of - (state.stage_entered_at or as_of)) / DAY
        ahead = max(stage.expected_days - in_stage, 0) + sum(
            s.expected_days for s in pipeline.stages[index + 1 :]
        )
        days_left = (_start_of(state.close_date + DAY) - as_of) / DAY
        if days_left < ahead:
            found.append(
                Question(
                    "close_risk",
                    f"If it does not close by {state.close_date}, why? {number(days_left)} days"
                    f" are left; the stages ahead take {number(ahead)} days as expected.",
                    {
                        "close_date": state.close_date.isoformat(),
                        "days_left": round(days_left, 2),
                        "expected_days_ahead": round(ahead, 2),
                        "stage": stage.key,
                    },
                )
            )
    return found
