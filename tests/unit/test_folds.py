"""The stage-interval and provenance folds, pure: given a deal's recorded events, then exactly
these stays, and exactly this account of how a stage was entered."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from app.domain import events as e
from app.domain.pipeline import DEFAULT_PIPELINE
from app.domain.provenance import Entry, EvidenceAtTheTime, Retraction, provenance
from app.domain.state import Evidence, Recorded
from app.projections.stage_intervals import Interval, next_intervals

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEAL = uuid.UUID("00000000-0000-4000-8000-00000000000d")
PROOF = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
DISCOVERY = tuple(c.key for c in DEFAULT_PIPELINE.stage("discovery").exit_criteria)

HISTORY: list[e.DomainEvent] = [
    e.DealOpened(
        name="Acme",
        owner="rick",
        amount=Decimal(1000),
        pipeline="default",
        pipeline_version=1,
        stage="discovery",
    ),
    e.EvidenceRecorded(
        evidence_id=PROOF,
        kind="meeting_notes",
        criteria=DISCOVERY,
        summary="all four",
        occurred_at=T0,
        recorded_by="rick",
    ),
    e.OwnerAssigned(owner="olga"),
    e.StageAdvanced(
        from_stage="discovery",
        to_stage="qualification",
        criteria=dict.fromkeys(DISCOVERY, (PROOF,)),
        pipeline_version=1,
    ),
    e.StageRegressed(
        from_stage="qualification",
        to_stage="discovery",
        trigger="timeline_extended",
        pipeline_version=1,
    ),
    e.EvidenceRetracted(evidence_id=PROOF, reason="no budget", retracted_by="maria"),
    e.DealDisqualified(from_stage="discovery", reason="cannot_afford"),
]
RECORDED = [
    Recorded(event, version, T0 + version * HOUR, T0 + version * HOUR)
    for version, event in enumerate(HISTORY, start=1)
]


def at(version: int) -> datetime:
    return T0 + version * HOUR


def test_stays_follow_every_stage_change_with_how_and_why_it_ended() -> None:
    stays: dict[int, Interval] = {}
    last: Interval | None = None
    for recorded in RECORDED:
        for interval in next_intervals(DEAL, last, recorded):
            stays[interval.seq] = interval
            last = interval
    assert list(stays.values()) == [
        Interval(DEAL, 1, "discovery", at(1), at(4), "advanced", None, None, "olga", Decimal(1000)),
        Interval(
            DEAL,
            2,
            "qualification",
            at(4),
            at(5),
            "regressed",
            "timeline_extended",
            None,
            "olga",
            Decimal(1000),
        ),
        Interval(
            DEAL,
            3,
            "discovery",
            at(5),
            at(7),
            "disqualified",
            "cannot_afford",
            None,
            "olga",
            Decimal(1000),
        ),
    ]


def test_provenance_shows_the_evidence_a_stage_was_earned_on_and_its_later_retraction() -> None:
    (entry,) = provenance(DEAL, RECORDED, {4: "maria"}, "qualification")
    stood = EvidenceAtTheTime(
        evidence=Evidence(PROOF, "meeting_notes", DISCOVERY, "all four", T0, at(2), version=2),
        recorded_by="rick",
        source=None,
        retracted_later=Retraction("no budget", "maria", at(6)),
    )
    assert entry == Entry(
        event_type="StageAdvanced",
        version=4,
        from_stage="discovery",
        recorded_at=at(4),
        actor="maria",
        pipeline_version=1,
        override=None,
        trigger=None,
        criteria={key: [stood] for key in DISCOVERY},
    )
    back = provenance(DEAL, RECORDED, {}, "discovery")
    assert [(b.event_type, b.trigger) for b in back] == [
        ("DealOpened", None),
        ("StageRegressed", "timeline_extended"),
    ]
