"""The rules, decided purely: given past events, when a command, then events or a refusal."""

from __future__ import annotations

import uuid
from datetime import date

from app.domain import commands as c
from app.domain import events as e
from app.domain.errors import (
    CriteriaNotMet,
    DealAlreadyExists,
    DealClosed,
    DealNotFound,
    InvalidTransition,
    OverrideNotAllowed,
    UnknownValue,
)
from app.domain.pipeline import DEFAULT_PIPELINE
from tests.unit.dsl import MANAGER, NOW, given

OPENED = e.DealOpened(
    name="Acme",
    owner="rick",
    pipeline="default",
    pipeline_version=1,
    stage="discovery",
    amount=1000,
    close_date=date(2027, 1, 1),
)


def evidence(*criteria: str) -> e.EvidenceRecorded:
    return e.EvidenceRecorded(
        evidence_id=uuid.uuid4(),
        kind="meeting_notes",
        criteria=criteria,
        summary="confirmed",
        occurred_at=NOW,
        recorded_by="rick",
    )


DISCOVERY_DONE = evidence(*(c.key for c in DEFAULT_PIPELINE.stage("discovery").exit_criteria))


def test_advance_with_every_criterion_evidenced() -> None:
    advanced, proposed = (
        given(OPENED, DISCOVERY_DONE)
        .when(c.AdvanceStage(to_stage="qualification"))
        .then(e.StageAdvanced, e.NextStepSet)
    )
    assert isinstance(advanced, e.StageAdvanced)
    assert advanced.criteria["budget_confirmed"] == (DISCOVERY_DONE.evidence_id,)
    assert advanced.pipeline_version == 1 and advanced.override is None
    assert isinstance(proposed, e.NextStepSet) and proposed.origin == "stage_template"


def test_advance_refused_lists_exactly_the_unmet_criteria() -> None:
    error = (
        given(OPENED, evidence("budget_confirmed"))
        .when(c.AdvanceStage(to_stage="qualification"))
        .then_refused(CriteriaNotMet)
    )
    assert error.extensions["unmet_criteria"] == [
        "decision_maker_identified",
        "pain_documented",
        "timeline_committed",
    ]


def test_retracted_evidence_satisfies_nothing() -> None:
    retracted = e.EvidenceRetracted(
        evidence_id=DISCOVERY_DONE.evidence_id, reason="budget did not exist", retracted_by="x"
    )
    given(OPENED, DISCOVERY_DONE, retracted).when(
        c.AdvanceStage(to_stage="qualification")
    ).then_refused(CriteriaNotMet)


def test_activity_alone_never_moves_a_stage() -> None:
    (event,) = (
        given(OPENED)
        .when(c.RecordBuyerActivity(activity_type="meeting_held", occurred_at=NOW))
        .then(e.BuyerActivityRecorded)
    )
    assert given(OPENED, event).state().stage == "discovery"


def test_override_needs_a_manager() -> None:
    command = c.AdvanceStage(to_stage="qualification", override_reason="exec sponsor")
    given(OPENED).when(command).then_refused(OverrideNotAllowed)
    advanced, _ = given(OPENED).when(command, MANAGER).then(e.StageAdvanced, e.NextStepSet)
    assert isinstance(advanced, e.StageAdvanced)
    assert advanced.override == e.Override(reason="exec sponsor", by="maria")


def test_terminal_deals_refuse_every_stage_change() -> None:
    lost = e.DealDisqualified(from_stage="discovery", reason="cannot_afford")
    for command in (
        c.AdvanceStage(to_stage="qualification"),
        c.RegressStage(to_stage="discovery", trigger="timeline_extended"),
        c.WinDeal(),
        c.NurtureDeal(reason="later", resume_on=date(2027, 1, 1)),
        c.ReactivateDeal(),
        c.DisqualifyDeal(reason="cannot_afford"),
    ):
        given(OPENED, DISCOVERY_DONE, lost).when(command).then_refused(DealClosed)


def test_regression_needs_known_trigger_and_earlier_stage() -> None:
    advanced = e.StageAdvanced(
        from_stage="discovery", to_stage="qualification", criteria={}, pipeline_version=1
    )
    given(OPENED, advanced).when(
        c.RegressStage(to_stage="discovery", trigger="boredom")
    ).then_refused(UnknownValue)
    given(OPENED, advanced).when(
        c.RegressStage(to_stage="qualification", trigger="timeline_extended")
    ).then_refused(InvalidTransition)
    given(OPENED, advanced).when(
        c.RegressStage(to_stage="discovery", trigger="timeline_extended")
    ).then(e.StageRegressed, e.NextStepSet)


def test_reactivation_returns_to_the_stage_left_or_earlier() -> None:
    advanced = e.StageAdvanced(
        from_stage="discovery", to_stage="qualification", criteria={}, pipeline_version=1
    )
    parked = e.DealNurtured(from_stage="qualification", reason="Q2", resume_on=date(2027, 4, 1))
    scenario = given(OPENED, advanced, parked)
    scenario.when(c.ReactivateDeal(to_stage="proposal")).then_refused(InvalidTransition)
    back, _ = scenario.when(c.ReactivateDeal()).then(e.DealReactivated, e.NextStepSet)
    assert isinstance(back, e.DealReactivated) and back.to_stage == "qualification"


def test_open_twice_and_commands_on_missing_deals_are_refused() -> None:
    given(OPENED).when(c.OpenDeal(name="x", owner="y")).then_refused(DealAlreadyExists)
    given().when(c.CompleteNextStep()).then_refused(DealNotFound)


def test_patch_with_same_values_changes_nothing() -> None:
    assert given(OPENED).when(c.ChangeDeal(owner="rick")).then() == []
    given(OPENED).when(c.ChangeDeal(owner="olga")).then(e.OwnerAssigned)
