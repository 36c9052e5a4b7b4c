"""Property-based: random command sequences never break the rules."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain import commands as c
from app.domain import events as e
from app.domain.decide import Actor, Context, decide
from app.domain.errors import DomainError
from app.domain.events import event_data, parse_event
from app.domain.pipeline import (
    BLOCKER_CATEGORIES,
    DEFAULT_PIPELINE,
    DISQUALIFICATION_REASONS,
    REGRESSION_TRIGGERS,
    STAKEHOLDER_ROLES,
)
from app.domain.state import DealState, Recorded, evolve, fold
from tests.unit.dsl import NOW

STAGES = DEFAULT_PIPELINE.stage_keys
CRITERIA = DEFAULT_PIPELINE.criterion_keys
ACTORS = st.sampled_from([Actor("rep", "rep"), Actor("boss", "manager")])

commands = st.one_of(
    st.builds(
        c.RecordEvidence,
        evidence_id=st.uuids(),
        kind=st.just("email"),
        criteria=st.lists(st.sampled_from(CRITERIA), min_size=1, max_size=3).map(tuple),
        summary=st.just("s"),
        occurred_at=st.just(NOW),
    ),
    st.builds(
        c.AdvanceStage,
        to_stage=st.sampled_from(STAGES),
        override_reason=st.none() | st.just("trust me"),
    ),
    st.builds(
        c.RegressStage,
        to_stage=st.sampled_from(STAGES),
        trigger=st.sampled_from(REGRESSION_TRIGGERS),
    ),
    st.builds(
        c.NurtureDeal, reason=st.just("later"), resume_on=st.just(NOW.date() + timedelta(days=30))
    ),
    st.builds(c.ReactivateDeal, to_stage=st.none() | st.sampled_from(STAGES)),
    st.builds(c.DisqualifyDeal, reason=st.sampled_from(DISQUALIFICATION_REASONS)),
    st.builds(c.WinDeal, override_reason=st.none() | st.just("signed on paper")),
    st.builds(
        c.RecordBuyerActivity, activity_type=st.just("email_replied"), occurred_at=st.just(NOW)
    ),
    st.builds(
        c.RaiseBlocker,
        blocker_id=st.uuids(),
        category=st.sampled_from(BLOCKER_CATEGORIES),
        description=st.just("d"),
    ),
    st.builds(
        c.AddStakeholder,
        stakeholder_id=st.uuids(),
        name=st.just("n"),
        role=st.sampled_from(STAKEHOLDER_ROLES),
    ),
    st.builds(c.SetNextStep, description=st.just("call"), due_date=st.just(date(2027, 1, 1))),
    st.builds(c.CompleteNextStep),
)
retract_any = st.integers(min_value=0, max_value=50)


def stage_index(stage: str) -> int:
    return STAGES.index(stage)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(commands, ACTORS, retract_any), min_size=1, max_size=40))
def test_random_command_sequences_keep_the_invariants(
    steps: list[tuple[c.Command, Actor, int]],
) -> None:
    deal_id = uuid.uuid4()
    opening = c.OpenDeal(name="d", owner="o", amount=None, close_date=None)
    ctx = Context(now=NOW, actor=Actor("rep", "rep"))
    history: list[Recorded] = []
    state = DealState(deal_id=deal_id)

    def apply(events: list[e.DomainEvent]) -> None:
        nonlocal state
        for event in events:
            # Events survive their stored form unchanged.
            assert parse_event(event.type, event.schema_version, event_data(event)) == event
            recorded = Recorded(event, state.version + 1, NOW, NOW)
            history.append(recorded)
            state = evolve(state, recorded)

    apply(decide(state, opening, ctx))
    for command, actor, pick in steps:
        if pick < 5 and state.evidence:  # now and then, retract some evidence
            evidence_id = list(state.evidence)[pick % len(state.evidence)]
            command = c.RetractEvidence(evidence_id=evidence_id, reason="wrong")
        before = state
        try:
            events = decide(before, command, Context(now=NOW, actor=actor))
        except DomainError:
            continue
        apply(events)
        kinds = [type(event) for event in events]
        if before.is_terminal:
            assert not {
                e.StageAdvanced,
                e.StageRegressed,
                e.DealWon,
                e.DealDisqualified,
                e.DealNurtured,
                e.DealReactivated,
            } & set(kinds)
        for event in events:
            if isinstance(event, e.StageAdvanced | e.DealWon):
                # Forward only with evidence for every criterion left behind, or an override.
                if event.override is None:
                    assert all(event.criteria.values())
                    for ids in event.criteria.values():
                        assert all(not before.evidence[i].retracted for i in ids)
                else:
                    assert actor.role == "manager"
            if isinstance(event, e.StageAdvanced):
                assert stage_index(event.to_stage) > stage_index(event.from_stage)
            if isinstance(event, e.StageRegressed):
                assert stage_index(event.to_stage) < stage_index(event.from_stage)
            if isinstance(event, e.BuyerActivityRecorded):
                assert state.stage == before.stage
    # Versions increase by one, and the fold of the events is the state the decider saw.
    assert [r.version for r in history] == list(range(1, len(history) + 1))
    assert fold(deal_id, history) == state
