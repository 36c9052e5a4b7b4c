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
    assert advanced.override == e.Override(reason="exec sponsor", by="maria", by_role="manager")


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


def criteria_of(stage: str) -> tuple[str, ...]:
    return tuple(criterion.key for criterion in DEFAULT_PIPELINE.stage(stage).exit_criteria)


QUALIFICATION_DONE = evidence(*criteria_of("qualification"))
TO_QUALIFICATION = e.StageAdvanced(
    from_stage="discovery",
    to_stage="qualification",
    criteria=dict.fromkeys(criteria_of("discovery"), (DISCOVERY_DONE.evidence_id,)),
    pipeline_version=1,
)
TO_PROPOSAL = e.StageAdvanced(
    from_stage="qualification",
    to_stage="proposal",
    criteria=dict.fromkeys(criteria_of("qualification"), (QUALIFICATION_DONE.evidence_id,)),
    pipeline_version=1,
)
SPONSOR = e.StakeholderAdded(stakeholder_id=uuid.uuid4(), name="Eve", role="economic_buyer")
STAKEHOLDER_CHANGED = e.StageRegressed(
    from_stage="proposal",
    to_stage="qualification",
    trigger="stakeholder_changed",
    pipeline_version=1,
)


def test_a_regression_reopens_the_criteria_its_trigger_concerns() -> None:
    back_in_qualification = given(
        OPENED, SPONSOR, DISCOVERY_DONE, TO_QUALIFICATION, QUALIFICATION_DONE, TO_PROPOSAL,
        STAKEHOLDER_CHANGED,
    )  # fmt: skip
    refused = back_in_qualification.when(c.AdvanceStage(to_stage="proposal")).then_refused(
        CriteriaNotMet
    )
    assert refused.extensions["unmet_criteria"] == [
        "economic_buyer_engaged",
        "decision_maker_identified",
    ]
    fresh = evidence("economic_buyer_engaged", "decision_maker_identified")
    advanced, _ = (
        given(*back_in_qualification.history, fresh)
        .when(c.AdvanceStage(to_stage="proposal"))
        .then(e.StageAdvanced, e.NextStepSet)
    )
    assert advanced == e.StageAdvanced(
        from_stage="qualification",
        to_stage="proposal",
        criteria={
            "economic_buyer_engaged": (fresh.evidence_id,),
            "technical_requirements_documented": (QUALIFICATION_DONE.evidence_id,),
            "evaluation_criteria_confirmed": (QUALIFICATION_DONE.evidence_id,),
            "proposal_requested": (QUALIFICATION_DONE.evidence_id,),
            "decision_maker_identified": (fresh.evidence_id,),
        },
        pipeline_version=1,
    )


def test_a_restarted_buying_process_reopens_the_target_stage_and_everything_after() -> None:
    restarted = e.StageRegressed(
        from_stage="proposal",
        to_stage="qualification",
        trigger="buying_process_restarted",
        pipeline_version=1,
    )
    state = given(
        OPENED, DISCOVERY_DONE, TO_QUALIFICATION, QUALIFICATION_DONE, TO_PROPOSAL, restarted
    ).state()
    assert set(state.reopened) == {
        key for stage in DEFAULT_PIPELINE.stages[1:] for key in criteria_of(stage.key)
    }
    assert state.evidence_for("budget_confirmed") == (DISCOVERY_DONE.evidence_id,)
    assert state.evidence_for("proposal_requested") == ()


BLOCKER = e.BlockerRaised(blocker_id=uuid.uuid4(), category="risk_aversion", description="?")
STEP = e.NextStepSet(description="Call the CFO", due_date=date(2026, 12, 1))


def test_winning_closes_the_open_blockers_and_next_step_with_the_outcome() -> None:
    assert given(OPENED, BLOCKER, STEP).when(
        c.WinDeal(override_reason="signed early"), MANAGER
    ).then(e.DealWon, e.BlockerResolved, e.NextStepCancelled)[1:] == [
        e.BlockerResolved(blocker_id=BLOCKER.blocker_id, resolution="deal won"),
        e.NextStepCancelled(description="Call the CFO", reason="deal won"),
    ]


def test_disqualifying_closes_the_open_work_with_the_reason() -> None:
    assert given(OPENED, BLOCKER, STEP).when(c.DisqualifyDeal(reason="cannot_afford")).then(
        e.DealDisqualified, e.BlockerResolved, e.NextStepCancelled
    )[1:] == [
        e.BlockerResolved(
            blocker_id=BLOCKER.blocker_id, resolution="deal disqualified: cannot_afford"
        ),
        e.NextStepCancelled(description="Call the CFO", reason="deal disqualified: cannot_afford"),
    ]


def test_evidence_for_a_criterion_the_deal_does_not_face_yet_is_kept() -> None:
    signed = evidence("contract_signed")
    (recorded,) = (
        given(OPENED)
        .when(
            c.RecordEvidence(
                evidence_id=signed.evidence_id,
                kind="signed_contract",
                criteria=("contract_signed",),
                summary="signed early",
                occurred_at=NOW,
            )
        )
        .then(e.EvidenceRecorded)
    )
    assert given(OPENED, recorded).state().evidence_for("contract_signed") == (signed.evidence_id,)
