"""Every flag rule as a table: given a deal's history, at a time, then exactly this flag (kind,
severity, when its condition began, the numbers behind it), or none just before it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from app.domain import events as e
from app.domain.flags import KINDS, Flag, Subject, advance, evaluate
from app.domain.state import DealState, Recorded

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
BLOCKER = uuid.UUID("00000000-0000-4000-8000-000000000001")


def opened(**fields: object) -> e.DealOpened:
    values: dict[str, object] = {
        "name": "Acme",
        "owner": "rick",
        "pipeline": "default",
        "pipeline_version": 1,
        "stage": "discovery",
        **fields,
    }
    return e.DealOpened.model_validate(values)


STEP = e.NextStepSet(description="Call the CFO", due_date=date(2026, 10, 20))


def buyer(at: datetime) -> e.BuyerActivityRecorded:
    return e.BuyerActivityRecorded(activity_type="email_replied", occurred_at=at)


History = tuple[tuple[timedelta, e.DomainEvent], ...]


def history(*events: tuple[timedelta, e.DomainEvent]) -> History:
    """Events, each recorded at T0 + its offset."""
    return events


def subject_at(events: History, as_of: datetime) -> Subject:
    """The rules' subject: the deal as it stood at `as_of` (events recorded by then)."""
    subject = Subject(DealState(deal_id=uuid.uuid4()))
    for version, (offset, event) in enumerate(events, start=1):
        at = T0 + offset
        if at > as_of:
            break
        occurred = getattr(event, "occurred_at", at)
        subject = advance(subject, Recorded(event, version, occurred, at))
    return subject


def flags_of(kind: str, events: History, as_of: datetime) -> list[Flag]:
    return [flag for flag in evaluate(subject_at(events, as_of), as_of) if flag.kind == kind]


PROOF = uuid.UUID("00000000-0000-4000-8000-000000000002")
DISCOVERY = (
    "budget_confirmed",
    "decision_maker_identified",
    "pain_documented",
    "timeline_committed",
)
EARNED = history(
    (0 * DAY, opened(amount=1000, close_date=date(2027, 1, 1))),
    (0 * DAY, STEP),
    (
        0 * DAY,
        e.EvidenceRecorded(
            evidence_id=PROOF,
            kind="meeting_notes",
            criteria=DISCOVERY,
            summary="all of it",
            occurred_at=T0,
            recorded_by="rick",
        ),
    ),
    (
        DAY,
        e.StageAdvanced(
            from_stage="discovery",
            to_stage="qualification",
            criteria=dict.fromkeys(DISCOVERY, (PROOF,)),
            pipeline_version=1,
        ),
    ),
    (3 * DAY, e.EvidenceRetracted(evidence_id=PROOF, reason="no budget", retracted_by="maria")),
)
QUIET = history((0 * DAY, opened(close_date=date(2027, 1, 1))), (0 * DAY, STEP))
CASES: list[tuple[str, History, datetime, datetime, Flag]] = [
    (
        "slow_in_stage",
        QUIET,
        T0 + 10 * DAY,  # 1.43 x the 7 expected days: not yet
        T0 + 11 * DAY,
        Flag(
            "slow_in_stage",
            "warning",
            T0 + 10.5 * DAY,
            {"days_in_stage": 11.0, "expected_days": 7, "ratio": 1.57},
        ),
    ),
    (
        "slow_in_stage",
        QUIET,
        T0 + 13.9 * DAY,
        T0 + 14 * DAY,  # 2 x: critical
        Flag(
            "slow_in_stage",
            "critical",
            T0 + 10.5 * DAY,
            {"days_in_stage": 14.0, "expected_days": 7, "ratio": 2.0},
        ),
    ),
    (
        "inactive",
        history((0 * DAY, opened()), (0 * DAY, STEP), (DAY, buyer(T0 + DAY))),
        T0 + 7.9 * DAY,
        T0 + 8 * DAY,
        Flag(
            "inactive",
            "warning",
            T0 + 8 * DAY,
            {
                "days_without_buyer_activity": 7.0,
                "threshold_days": 7,
                "last_buyer_activity_at": (T0 + DAY).isoformat(),
            },
        ),
    ),
    (
        "next_step_overdue",
        history((0 * DAY, opened()), (0 * DAY, STEP)),
        datetime(2026, 10, 20, 23, 59, tzinfo=UTC),  # due today: not overdue
        datetime(2026, 10, 21, 12, 0, tzinfo=UTC),
        Flag(
            "next_step_overdue",
            "warning",
            datetime(2026, 10, 21, tzinfo=UTC),
            {"due_date": "2026-10-20", "days_overdue": 0.5, "next_step": "Call the CFO"},
        ),
    ),
    (
        "next_step_overdue",
        history((0 * DAY, opened()), (0 * DAY, STEP)),
        datetime(2026, 10, 27, 23, 0, tzinfo=UTC),
        datetime(2026, 10, 28, 0, 0, tzinfo=UTC),  # a week overdue: critical
        Flag(
            "next_step_overdue",
            "critical",
            datetime(2026, 10, 21, tzinfo=UTC),
            {"due_date": "2026-10-20", "days_overdue": 7.0, "next_step": "Call the CFO"},
        ),
    ),
    (
        "no_next_step",
        history(
            (0 * DAY, opened()),
            (0 * DAY, STEP),
            (2 * DAY, e.NextStepCompleted(description="Call the CFO")),
        ),
        T0 + 1.9 * DAY,
        T0 + 2 * DAY,
        Flag("no_next_step", "warning", T0 + 2 * DAY, {"since": (T0 + 2 * DAY).isoformat()}),
    ),
    (
        "close_date_passed",
        history((0 * DAY, opened(close_date=date(2026, 10, 3))), (0 * DAY, STEP)),
        datetime(2026, 10, 3, 23, 59, tzinfo=UTC),
        datetime(2026, 10, 4, 6, 0, tzinfo=UTC),
        Flag(
            "close_date_passed",
            "warning",
            datetime(2026, 10, 4, tzinfo=UTC),
            {"close_date": "2026-10-03", "days_past": 0.25},
        ),
    ),
    (
        "close_date_passed",
        history((0 * DAY, opened(close_date=date(2026, 10, 3))), (0 * DAY, STEP)),
        datetime(2026, 10, 3, 12, 0, tzinfo=UTC),
        datetime(2026, 10, 18, 0, 0, tzinfo=UTC),  # two weeks past: critical
        Flag(
            "close_date_passed",
            "critical",
            datetime(2026, 10, 4, tzinfo=UTC),
            {"close_date": "2026-10-03", "days_past": 14.0},
        ),
    ),
    (
        "missing_required_fields",
        history(
            (0 * DAY, opened()),
            (0 * DAY, STEP),
            (
                3 * DAY,
                e.StageAdvanced(
                    from_stage="discovery",
                    to_stage="qualification",
                    criteria={},
                    pipeline_version=1,
                    override=e.Override(reason="imported", by="maria"),
                ),
            ),
        ),
        T0 + 2 * DAY,  # in discovery, nothing is required
        T0 + 3 * DAY,
        Flag(
            "missing_required_fields",
            "warning",
            T0 + 3 * DAY,
            {"missing": ["amount", "close_date"], "stage": "qualification"},
        ),
    ),
    (
        "ghosting",
        history(
            (0 * DAY, opened()),
            (0 * DAY, STEP),
            *((n * DAY, buyer(T0 + n * DAY)) for n in range(4)),  # daily, then silence
        ),
        T0 + 6 * DAY,  # 3 x the 1-day median gap: not yet
        T0 + 6.5 * DAY,
        Flag(
            "ghosting",
            "critical",
            T0 + 6 * DAY,
            {
                "silent_days": 3.5,
                "median_gap_days": 1.0,
                "threshold_days": 3.0,
                "activities_considered": 4,
            },
        ),
    ),
    (
        "stuck_blocker",
        history(
            (0 * DAY, opened()),
            (0 * DAY, STEP),
            (
                DAY,
                e.BlockerRaised(blocker_id=BLOCKER, category="budget_uncertainty", description="?"),
            ),
        ),
        T0 + 14.9 * DAY,
        T0 + 15 * DAY,
        Flag(
            "stuck_blocker",
            "warning",
            T0 + 15 * DAY,
            {
                "blocker_id": str(BLOCKER),
                "category": "budget_uncertainty",
                "days_open": 14.0,
                "threshold_days": 14,
            },
        ),
    ),
    (
        "stage_evidence_retracted",
        EARNED,
        T0 + 2.9 * DAY,
        T0 + 3 * DAY,
        Flag(
            "stage_evidence_retracted",
            "critical",
            T0 + 3 * DAY,
            {
                "stages": ["discovery"],
                "criteria": sorted(DISCOVERY),
                "retracted_evidence_ids": [str(PROOF)],
            },
        ),
    ),
    (
        "nurture_resume_due",
        history(
            (0 * DAY, opened()),
            (
                DAY,
                e.DealNurtured(
                    from_stage="discovery", reason="budget next year", resume_on=date(2026, 10, 10)
                ),
            ),
        ),
        datetime(2026, 10, 9, 23, 59, tzinfo=UTC),
        datetime(2026, 10, 10, 0, 0, tzinfo=UTC),
        Flag(
            "nurture_resume_due",
            "warning",
            datetime(2026, 10, 10, tzinfo=UTC),
            {"resume_on": "2026-10-10"},
        ),
    ),
]


@pytest.mark.parametrize(
    ("kind", "events", "before", "at", "expected"),
    CASES,
    ids=[f"{case[0]}-{case[4].severity}" for case in CASES],
)
def test_a_rule_raises_exactly_its_flag_and_not_a_moment_before(
    kind: str, events: History, before: datetime, at: datetime, expected: Flag
) -> None:
    assert flags_of(kind, events, at) == [expected]
    earlier = flags_of(kind, events, before)
    assert earlier == [] or earlier[0].severity != expected.severity


def test_every_kind_has_a_case() -> None:
    assert {case[0] for case in CASES} == set(KINDS)


@pytest.mark.parametrize(
    "closing",
    [
        e.DealWon(
            from_stage="discovery",
            criteria={},
            pipeline_version=1,
            override=e.Override(reason="signed", by="maria"),
        ),
        e.DealDisqualified(from_stage="discovery", reason="cannot_afford"),
    ],
)
def test_a_closed_deal_raises_no_flag(closing: e.DomainEvent) -> None:
    events = history((0 * DAY, opened(close_date=date(2026, 10, 2))), (DAY, closing))
    assert evaluate(subject_at(events, T0 + 90 * DAY), T0 + 90 * DAY) == []


def fresh_evidence(at: datetime, *criteria: str) -> e.EvidenceRecorded:
    return e.EvidenceRecorded(
        evidence_id=uuid.uuid4(),
        kind="email",
        criteria=criteria,
        summary="confirmed again",
        occurred_at=at,
        recorded_by="rick",
    )


@pytest.mark.parametrize(
    "remedy",
    [
        fresh_evidence(T0 + 4 * DAY, *DISCOVERY),
        e.StageRegressed(
            from_stage="qualification",
            to_stage="discovery",
            trigger="qualification_assumption_wrong",
            pipeline_version=1,
        ),
    ],
    ids=["fresh evidence", "regression"],
)
def test_retracted_stage_evidence_clears_on_fresh_evidence_or_a_regression(
    remedy: e.DomainEvent,
) -> None:
    assert flags_of("stage_evidence_retracted", EARNED, T0 + 3.5 * DAY)
    remedied = (*EARNED, (4 * DAY, remedy))
    assert flags_of("stage_evidence_retracted", remedied, T0 + 4 * DAY) == []


def test_partly_fresh_evidence_leaves_the_flag_on_what_is_still_unsupported() -> None:
    partly = (*EARNED, (4 * DAY, fresh_evidence(T0 + 4 * DAY, "budget_confirmed")))
    (flag,) = flags_of("stage_evidence_retracted", partly, T0 + 4 * DAY)
    assert flag.numbers["criteria"] == sorted(set(DISCOVERY) - {"budget_confirmed"})
