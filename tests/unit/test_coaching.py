"""Coaching questions: each raised by its gap with the data that shows it, never without."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from app.domain import events as e
from app.domain.coaching import QUESTIONS, last_contact, questions_for
from app.domain.pipeline import DEFAULT_PIPELINE
from app.domain.state import DealState, Recorded, evolve

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
EVE = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
PEOPLE = [
    e.StakeholderAdded(stakeholder_id=uuid.uuid4(), name="Cat", role="champion"),
    e.StakeholderAdded(stakeholder_id=EVE, name="Eve", role="economic_buyer"),
    e.StakeholderAdded(stakeholder_id=uuid.uuid4(), name="Dan", role="decision_maker"),
]


def deal(*events: e.DomainEvent, stage: str = "qualification") -> tuple[DealState, list[Recorded]]:
    opened = e.DealOpened(
        name="Acme",
        owner="rick",
        pipeline="default",
        pipeline_version=1,
        stage=stage,
        amount=10000,
        close_date=date(2027, 6, 30),
    )
    history = [Recorded(event, v, T0, T0) for v, event in enumerate([opened, *events], 1)]
    state = DealState(deal_id=uuid.uuid4())
    for recorded in history:
        state = evolve(state, recorded)
    return state, history


def asked(state: DealState, history: list[Recorded], at: datetime) -> dict[str, dict[str, Any]]:
    found = questions_for(state, DEFAULT_PIPELINE, at, last_contact(history, state))
    return {q.key: {"cites": q.cites, "question": q.question} for q in found}


def evidence(*criteria: str) -> e.EvidenceRecorded:
    return e.EvidenceRecorded(
        evidence_id=uuid.uuid4(),
        kind="meeting_notes",
        criteria=criteria,
        summary="s",
        occurred_at=T0,
        recorded_by="rick",
    )


STEP = e.NextStepSet(description="Meet the CFO", due_date=date(2026, 10, 10))
CALL_EVE = e.BuyerActivityRecorded(
    activity_type="meeting_held", occurred_at=T0, details={"stakeholder_id": str(EVE)}
)
READY = evidence(*[c.key for c in DEFAULT_PIPELINE.stage("qualification").exit_criteria])


def test_a_deal_without_gaps_gets_no_question() -> None:
    state, history = deal(*PEOPLE, READY, STEP, CALL_EVE)
    assert asked(state, history, T0 + 2 * DAY) == {}


def test_each_gap_raises_its_question_with_its_data() -> None:
    state, history = deal(PEOPLE[0])
    found = asked(state, history, T0 + 2 * DAY)
    assert set(found) == {"ready_to_advance", "next_stage", "missing_stakeholders"}
    assert found["ready_to_advance"]["cites"] == {
        "stage": "qualification",
        "unmet_criteria": [c.key for c in DEFAULT_PIPELINE.stage("qualification").exit_criteria],
        "met": 0,
    }
    assert found["next_stage"]["cites"] == {
        "next_stage": "proposal",
        "missing_required_fields": ["economic_buyer"],
        "next_step": None,
        "next_step_due": None,
    }
    assert found["next_stage"]["question"] == (
        "What must happen for it to reach proposal? No next step is set; proposal needs"
        " economic buyer."
    )
    assert found["missing_stakeholders"]["cites"] == {
        "missing_roles": ["economic_buyer", "decision_maker"],
        "stage": "qualification",
    }


def test_an_overdue_step_is_a_gap_from_the_day_after_it_was_due() -> None:
    state, history = deal(*PEOPLE, READY, STEP, CALL_EVE)
    assert "next_stage" not in asked(state, history, datetime(2026, 10, 10, 23, 59, tzinfo=UTC))
    late = asked(state, history, datetime(2026, 10, 11, tzinfo=UTC))
    assert late["next_stage"]["cites"]["next_step_due"] == "2026-10-10"


def test_the_economic_buyer_question_at_14_quiet_days_or_never() -> None:
    state, history = deal(*PEOPLE, READY, STEP, CALL_EVE)
    assert "economic_buyer_contact" not in asked(state, history, T0 + 14 * DAY - timedelta(1))
    quiet = asked(state, history, T0 + 14 * DAY)["economic_buyer_contact"]
    assert quiet["cites"] == {
        "economic_buyer": "Eve",
        "last_contact_at": T0.isoformat(),
        "days_since": 14.0,
        "threshold_days": 14,
    }
    never, history = deal(*PEOPLE, READY, STEP)
    cites = asked(never, history, T0 + DAY)["economic_buyer_contact"]["cites"]
    assert cites["last_contact_at"] is None


def test_blockers_and_a_close_date_too_near_for_the_stages_ahead() -> None:
    blocker = e.BlockerRaised(
        blocker_id=uuid.uuid4(), category="risk_aversion", description="legal worried"
    )
    close = e.CloseDateChanged(close_date=date(2026, 11, 30))
    state, history = deal(*PEOPLE, READY, STEP, CALL_EVE, blocker, close)
    # In qualification (14 expected) since T0; proposal 21, negotiation 28, closing 10.
    # At T0 + 4 days: 10 + 59 = 69 days ahead; 2026-12-01 00:00 is 56.6 days away.
    found = asked(state, history, T0 + 4 * DAY)
    assert set(found) == {"open_blockers", "close_risk"}
    assert (
        found["open_blockers"]["question"] == "What could block it? 1 open blocker:"
        " risk aversion (4 days)."
    )
    assert found["close_risk"]["cites"] == {
        "close_date": "2026-11-30",
        "days_left": 56.62,
        "expected_days_ahead": 69.0,
        "stage": "qualification",
    }
    roomy = e.CloseDateChanged(close_date=date(2026, 12, 30))
    state, history = deal(*PEOPLE, READY, STEP, CALL_EVE, roomy)
    assert asked(state, history, T0 + 4 * DAY) == {}


def test_the_six_questions() -> None:
    assert len(QUESTIONS) == 6
