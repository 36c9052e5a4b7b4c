"""Pipelines as data, decided purely: validation, versions as events, deals judged by the
version they live under, migration, per-version flag thresholds, diff."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given as hypothesis_given
from hypothesis import strategies as st

from app.domain import commands as c
from app.domain import events as e
from app.domain.errors import (
    CriteriaNotMet,
    InvalidCommand,
    InvalidPipeline,
    InvalidRequest,
    PipelineExists,
    PipelineNotFound,
    PipelineVersionConflict,
    UnknownValue,
)
from app.domain.flags import Subject, evaluate
from app.domain.pipeline import (
    BUILT_IN,
    DEFAULT_PIPELINE,
    Catalog,
    Pipeline,
    PipelineDocument,
)
from app.domain.pipeline_rules import diff, problems
from app.domain.pipeline_versions import PublishPipeline, decide_publish
from app.domain.state import Recorded, fold
from tests.unit.dsl import NOW, given

EXAMPLES = Path(__file__).parents[2] / "examples" / "pipelines"


def example(name: str) -> PipelineDocument:
    return PipelineDocument.model_validate(yaml.safe_load((EXAMPLES / name).read_text()))


def default_doc(**changes: Any) -> dict[str, Any]:
    return {**DEFAULT_PIPELINE.document().model_dump(mode="json"), **changes}


def published(document: PipelineDocument, version: int) -> Pipeline:
    return Pipeline.model_validate({**document.model_dump(), "version": version})


# -- the document and its validation ------------------------------------------------------


def test_the_default_and_every_shipped_example_are_valid() -> None:
    assert problems(DEFAULT_PIPELINE) == []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        assert problems(example(path.name)) == [], path.name


def test_the_shipped_default_file_is_the_built_in_default() -> None:
    assert example("default.yaml") == DEFAULT_PIPELINE.document()
    stored = Pipeline.model_validate_json(DEFAULT_PIPELINE.model_dump_json())
    assert stored == DEFAULT_PIPELINE and diff(DEFAULT_PIPELINE, stored) == []


def test_the_funnel_has_four_stages_at_10_25_50_75_percent() -> None:
    funnel = example("funnel.yaml")
    assert funnel.stage_keys == ("lead", "qualified", "proposal", "negotiation")
    assert [s.probability for s in funnel.stages] == [0.10, 0.25, 0.50, 0.75]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"stages": []}, "stages: a pipeline needs at least one stage"),
        (
            {"stages": [*default_doc()["stages"], default_doc()["stages"][0]]},
            "duplicate stage key 'discovery'",
        ),
        (
            {"stages": list(reversed(default_doc()["stages"]))},
            "probabilities rise stage by stage",
        ),
        (
            {"regression_triggers": [{"key": "oops", "reopens": ["no_such_criterion"]}]},
            "regression_triggers.oops.reopens: unknown criterion 'no_such_criterion'",
        ),
        ({"late_stages": ["limbo"]}, "late_stages: unknown stage 'limbo'"),
        ({"disqualification_reasons": []}, "disqualification_reasons: at least one is needed"),
    ],
)
def test_invalid_documents_name_the_problem(change: dict[str, Any], named: str) -> None:
    found = problems(PipelineDocument.model_validate(default_doc(**change)))
    assert any(named in problem for problem in found), found


def test_a_stage_without_criteria_an_unknown_field_or_a_reserved_key_is_named() -> None:
    stage = {
        "key": "won",
        "label": "Won?",
        "probability": 0.5,
        "expected_days": 3,
        "exit_criteria": [],
        "required_fields": ["budget"],
        "stall": {"slow_warning_ratio": 3, "slow_critical_ratio": 2},
    }
    found = problems(PipelineDocument.model_validate({"key": "x", "label": "X", "stages": [stage]}))
    assert (
        "stages.won: 'won' is reserved (nurture, won, disqualified are deal outcomes or states)"
        in found
    )
    assert "stages.won.exit_criteria: a stage needs at least one criterion" in found
    assert any("unknown field 'budget'" in p for p in found)
    assert any("slow_critical_ratio 2.0 is below slow_warning_ratio 3.0" in p for p in found)


KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@st.composite
def valid_documents(draw: st.DrawFn) -> PipelineDocument:
    """Any document the rules should accept: distinct keys, rising probabilities, triggers
    naming only criteria that exist."""
    stage_keys = draw(
        st.lists(
            KEYS.filter(lambda k: k not in ("won", "nurture", "disqualified")),
            min_size=1,
            max_size=6,
            unique=True,
        )
    )
    criterion_keys = draw(
        st.lists(KEYS, min_size=len(stage_keys), max_size=len(stage_keys) * 3, unique=True)
    )
    probabilities = sorted(
        draw(
            st.lists(
                st.integers(1, 99), min_size=len(stage_keys), max_size=len(stage_keys), unique=True
            )
        )
    )
    stages = []
    for index, key in enumerate(stage_keys):
        mine = criterion_keys[index :: len(stage_keys)]
        stages.append(
            {
                "key": key,
                "label": key.title(),
                "probability": probabilities[index] / 100,
                "expected_days": draw(st.integers(1, 90)),
                "exit_criteria": [{"key": k, "label": k} for k in mine],
                "required_fields": draw(
                    st.lists(
                        st.sampled_from(["amount", "close_date", "economic_buyer"]), unique=True
                    )
                ),
                "stall": {"inactive_days": draw(st.none() | st.integers(1, 30))},
            }
        )
    triggers = [
        {"key": f"t{i}", "reopens": draw(st.lists(st.sampled_from(criterion_keys), unique=True))}
        for i in range(draw(st.integers(0, 3)))
    ]
    return PipelineDocument.model_validate(
        {
            "key": draw(KEYS),
            "label": "Generated",
            "stages": stages,
            "late_stages": draw(st.lists(st.sampled_from(stage_keys), unique=True)),
            "regression_triggers": triggers,
        }
    )


@hypothesis_given(valid_documents())
def test_every_valid_document_is_accepted_and_round_trips(document: PipelineDocument) -> None:
    assert problems(document) == []
    again = PipelineDocument.model_validate_json(document.model_dump_json())
    assert again == document
    assert diff(document, again) == []


@hypothesis_given(valid_documents())
def test_equal_probabilities_are_always_refused(document: PipelineDocument) -> None:
    if len(document.stages) < 2:
        return
    stages = [s.model_dump() for s in document.stages]
    stages[1]["probability"] = stages[0]["probability"]
    flat = PipelineDocument.model_validate({**document.model_dump(), "stages": stages})
    assert any("probabilities rise" in p for p in problems(flat))


# -- versions as events ----------------------------------------------------------------------

FUNNEL = example("funnel.yaml")


def test_creating_writes_version_1_and_creating_again_is_refused() -> None:
    (event,) = decide_publish((), None, PublishPipeline(FUNNEL, creating=True))
    assert event.pipeline.version == 1 and event.pipeline.document() == FUNNEL
    with pytest.raises(PipelineExists):
        decide_publish((event.pipeline,), None, PublishPipeline(FUNNEL, creating=True))
    with pytest.raises(PipelineExists):
        decide_publish((), DEFAULT_PIPELINE, PublishPipeline(DEFAULT_PIPELINE.document(), True))


def test_a_revision_of_something_unknown_or_mismatched_is_refused() -> None:
    with pytest.raises(PipelineNotFound):
        decide_publish((), None, PublishPipeline(FUNNEL, creating=False))
    with pytest.raises(InvalidRequest):
        decide_publish((), None, PublishPipeline(FUNNEL, creating=True, key="other"))
    v1 = published(FUNNEL, 1)
    with pytest.raises(PipelineVersionConflict):
        decide_publish((v1,), None, PublishPipeline(FUNNEL, creating=False, version=3))


def test_the_first_revision_of_the_default_stores_the_built_in_as_version_1() -> None:
    revised = PipelineDocument.model_validate(default_doc(label="Ours"))
    first, second = decide_publish((), DEFAULT_PIPELINE, PublishPipeline(revised, False))
    assert first.pipeline == DEFAULT_PIPELINE
    assert second.pipeline.version == 2 and second.pipeline.label == "Ours"


def test_publishing_the_latest_again_writes_nothing() -> None:
    v1 = published(FUNNEL, 1)
    assert decide_publish((v1,), None, PublishPipeline(FUNNEL, creating=False)) == []
    assert decide_publish((), DEFAULT_PIPELINE, PublishPipeline(DEFAULT_PIPELINE, False)) == []


def test_an_invalid_document_is_refused_with_every_problem() -> None:
    bad = PipelineDocument.model_validate(default_doc(stages=[], late_stages=["x"]))
    with pytest.raises(InvalidPipeline) as refused:
        decide_publish((), DEFAULT_PIPELINE, PublishPipeline(bad, creating=False))
    found = refused.value.extensions["problems"]
    assert {"stages: a pipeline needs at least one stage", "late_stages: unknown stage 'x'"} <= set(
        found
    )


def test_diff_names_an_added_criterion_and_a_changed_probability() -> None:
    v2 = with_new_discovery_criterion()
    changes = {change.path: change for change in diff(DEFAULT_PIPELINE, v2)}
    added = changes["stages.discovery.exit_criteria.champion_found"]
    assert added.before is None and added.after["label"] == "Champion found"
    assert list(changes) == ["stages.discovery.exit_criteria.champion_found"]


# -- deals judged by their version -------------------------------------------------------------


def with_new_discovery_criterion() -> Pipeline:
    stages = default_doc()["stages"]
    stages[0]["exit_criteria"].append({"key": "champion_found", "label": "Champion found"})
    return Pipeline.model_validate({**default_doc(stages=stages), "version": 2})


V2 = with_new_discovery_criterion()
BOTH = BUILT_IN.with_versions("default", [DEFAULT_PIPELINE, V2])
DISCOVERY = tuple(c.key for c in DEFAULT_PIPELINE.stage("discovery").exit_criteria)


def opened(version: int, pipeline: str = "default", stage: str = "discovery") -> e.DealOpened:
    return e.DealOpened(
        name="Acme",
        owner="rick",
        pipeline=pipeline,
        pipeline_version=version,
        stage=stage,
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


def test_a_new_deal_opens_on_the_latest_version() -> None:
    (deal_opened, _) = (
        given().under(BOTH).when(c.OpenDeal(name="A", owner="o")).then(e.DealOpened, e.NextStepSet)
    )
    assert isinstance(deal_opened, e.DealOpened) and deal_opened.pipeline_version == 2


def test_a_deal_on_version_1_advances_by_version_1s_criteria() -> None:
    (advanced, _) = (
        given(opened(1), evidence(*DISCOVERY))
        .under(BOTH)
        .when(c.AdvanceStage(to_stage="qualification"))
        .then(e.StageAdvanced, e.NextStepSet)
    )
    assert isinstance(advanced, e.StageAdvanced) and advanced.pipeline_version == 1


def test_a_deal_on_version_2_needs_its_new_criterion() -> None:
    refused = (
        given(opened(2), evidence(*DISCOVERY))
        .under(BOTH)
        .when(c.AdvanceStage(to_stage="qualification"))
        .then_refused(CriteriaNotMet)
    )
    assert refused.extensions["unmet_criteria"] == ["champion_found"]


def test_migrating_moves_the_deal_to_the_latest_version_with_one_event() -> None:
    (migrated,) = (
        given(opened(1))
        .under(BOTH)
        .when(c.MigrateDeal(reason="rollout of v2"))
        .then(e.DealMigrated)
    )
    assert migrated == e.DealMigrated(
        pipeline="default",
        from_version=1,
        to_version=2,
        from_stage="discovery",
        to_stage="discovery",
        reason="rollout of v2",
    )
    after = given(opened(1), migrated, evidence(*DISCOVERY)).under(BOTH)
    assert after.state().pipeline_version == 2
    error = after.when(c.AdvanceStage(to_stage="qualification")).then_refused(CriteriaNotMet)
    assert error.extensions["unmet_criteria"] == ["champion_found"]


def test_migrating_to_the_version_the_deal_is_on_changes_nothing() -> None:
    given(opened(2)).under(BOTH).when(c.MigrateDeal(reason="again")).then()


def test_a_stage_the_new_version_lacks_must_be_mapped() -> None:
    funnel_v1 = published(FUNNEL, 1)
    stages = [s.model_dump() for s in FUNNEL.stages if s.key != "proposal"]
    funnel_v2 = Pipeline.model_validate({**FUNNEL.model_dump(), "stages": stages, "version": 2})
    catalog = Catalog({"funnel": (funnel_v1, funnel_v2)})
    deal = given(
        opened(1, "funnel", "lead"),
        e.StageAdvanced(from_stage="lead", to_stage="proposal", criteria={}, pipeline_version=1),
    ).under(catalog)
    refused = deal.when(c.MigrateDeal(reason="drop proposal")).then_refused(InvalidCommand)
    assert refused.extensions["allowed"] == ["lead", "qualified", "negotiation"]
    wrong = deal.when(c.MigrateDeal(reason="x", stage_mapping={"proposal": "nowhere"}))
    assert isinstance(wrong.then_refused(UnknownValue), UnknownValue)
    migrated, _ = deal.when(
        c.MigrateDeal(reason="drop proposal", stage_mapping={"proposal": "negotiation"})
    ).then(e.DealMigrated, e.NextStepSet)
    assert isinstance(migrated, e.DealMigrated) and migrated.to_stage == "negotiation"


def test_regression_triggers_and_reasons_are_the_versions_own() -> None:
    catalog = Catalog({"funnel": (published(FUNNEL, 1),)})
    deal = given(
        opened(1, "funnel", "lead"),
        e.StageAdvanced(from_stage="lead", to_stage="qualified", criteria={}, pipeline_version=1),
    ).under(catalog)
    refused = deal.when(
        c.RegressStage(to_stage="lead", trigger="stakeholder_changed")
    ).then_refused(UnknownValue)
    assert refused.extensions["allowed"] == ["need_changed", "decision_maker_changed", "restarted"]
    deal.when(c.RegressStage(to_stage="lead", trigger="need_changed")).then(
        e.StageRegressed, e.NextStepSet
    )
    deal.when(c.DisqualifyDeal(reason="no_budget")).then(e.DealDisqualified)
    deal.when(c.DisqualifyDeal(reason="cannot_afford")).then_refused(UnknownValue)


# -- flags by the version's thresholds ----------------------------------------------------------


def subject_on(pipeline: str, version: int, stage: str, catalog: Catalog) -> Subject:
    history = [Recorded(opened(version, pipeline, stage), 1, NOW, NOW)]
    return Subject(fold(uuid.uuid4(), history, pipelines=catalog))


def test_flags_use_the_stage_thresholds_of_the_deals_version() -> None:
    stages = default_doc()["stages"]
    stages[0]["stall"] = {"slow_warning_ratio": 1.0, "slow_critical_ratio": 1.2, "inactive_days": 2}
    strict = Pipeline.model_validate({**default_doc(stages=stages), "version": 2})
    catalog = BUILT_IN.with_versions("default", [DEFAULT_PIPELINE, strict])
    as_of = NOW + timedelta(days=8)  # discovery expects 7 days: ratio 1.14
    on_v1 = {
        f.kind: f
        for f in evaluate(subject_on("default", 1, "discovery", catalog), as_of, pipelines=catalog)
    }
    on_v2 = {
        f.kind: f
        for f in evaluate(subject_on("default", 2, "discovery", catalog), as_of, pipelines=catalog)
    }
    assert "slow_in_stage" not in on_v1  # 1.5 x by the service's settings
    assert on_v1["inactive"].numbers["threshold_days"] == 7
    assert on_v2["slow_in_stage"].severity == "warning"
    assert on_v2["inactive"].numbers["threshold_days"] == 2
    assert on_v2["inactive"].raised_at == NOW + timedelta(days=2)
