"""Pipelines: versioned configuration of stages, exit criteria, required fields, templates,
stall thresholds, regression triggers, reasons and blocker categories.

A pipeline is a document an admin defines; each change is a new version stored as an event
in the pipeline's own stream. A new version never rewrites history: every deal records the
version it lives under and every stage change the version it was judged by. `Catalog` holds
the versions a decision or a fold may need; the built-in default needs no configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ACTIVE = "open"
NURTURE = "nurture"
WON = "won"
DISQUALIFIED = "disqualified"
STATUSES = (ACTIVE, NURTURE, WON, DISQUALIFIED)

REGRESSION_TRIGGERS = (
    "qualification_assumption_wrong",
    "stakeholder_changed",
    "requirements_changed",
    "decision_maker_pushed_back",
    "timeline_extended",
    "buying_process_restarted",
)
DISQUALIFICATION_REASONS = (
    "cannot_afford",
    "chose_competitor",
    "problem_not_fit",
    "will_not_buy",
    "effort_exceeds_return",
)
BLOCKER_CATEGORIES = (
    "information_gap",
    "stakeholder_access",
    "competing_priorities",
    "risk_aversion",
    "budget_uncertainty",
    "internal_politics",
    "analysis_paralysis",
)
STAKEHOLDER_ROLES = (
    "champion",
    "economic_buyer",
    "decision_maker",
    "technical_evaluator",
    "legal",
    "procurement",
    "user",
)
ACTIVITY_TYPES = (
    "email_replied",
    "meeting_held",
    "call_held",
    "content_viewed",
    "stakeholder_joined",
    "document_shared",
    "pilot_started",
    "question_asked",
    "competitor_mentioned",
)
EVIDENCE_KINDS = (
    "meeting_notes",
    "email",
    "call_recording",
    "technical_evaluation",
    "proposal_request",
    "contract_review",
    "purchase_order",
    "signed_contract",
    "document",
)
# Fields a stage can require of the deal before it may be entered.
REQUIRED_FIELD_KEYS = ("amount", "close_date", "economic_buyer")
# The words deals already use for where they stand: no pipeline may name a stage so.
RESERVED_STAGE_KEYS = (NURTURE, WON, DISQUALIFIED)

Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="a-z, 0-9, _")]
Label = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(min_length=1, max_length=2000)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Criterion(Frozen):
    key: Key
    label: Label
    description: Description | None = None


class NextStepTemplate(Frozen):
    description: Description
    due_in_days: int = Field(ge=0, le=3650)


class StallThresholds(Frozen):
    """When a deal in this stage counts as stalled; unset: the service's settings."""

    slow_warning_ratio: float | None = Field(default=None, gt=0, le=1000)
    """Days in stage / expected days at which `slow_in_stage` warns."""
    slow_critical_ratio: float | None = Field(default=None, gt=0, le=1000)
    inactive_days: float | None = Field(default=None, gt=0, le=3650)
    """Days without buyer activity that raise `inactive`."""
    long_stay_ratio: float | None = Field(default=None, gt=0, le=1000)
    """Days in stage / expected days past which pipeline health lists a deal as too long
    in the stage (set: the stage is watched; proposal is watched at 2x by default)."""


class Stage(Frozen):
    key: Key
    label: Label
    probability: float = Field(gt=0, lt=1)
    expected_days: int = Field(ge=1, le=3650)
    exit_criteria: tuple[Criterion, ...] = Field(max_length=50)
    required_fields: tuple[str, ...] = Field(default=(), max_length=10)
    next_step_templates: tuple[NextStepTemplate, ...] = Field(default=(), max_length=20)
    stall: StallThresholds = StallThresholds()


class RegressionTrigger(Frozen):
    """Why a deal moved back, and which exit criteria that reopens: evidence recorded before
    the regression no longer meets them, so advancing again needs fresh evidence."""

    key: Key
    label: Label | None = None
    reopens: tuple[str, ...] = Field(default=(), max_length=500)
    reopens_target_and_later: bool = False
    """Reopen every criterion of the stage moved back to and of each stage after it."""


class Choice(Frozen):
    """A coded value a pipeline offers (a disqualification reason, a blocker category)."""

    key: Key
    label: Label


def _choices(keys: Iterable[str]) -> tuple[Choice, ...]:
    return tuple(Choice(key=key, label=key.replace("_", " ").capitalize()) for key in keys)


# What a document that leaves them out gets: the service's standard vocabularies, with
# every trigger reopening the stage moved back to and later (valid for any stages).
STANDARD_TRIGGERS = tuple(
    RegressionTrigger(key=key, reopens_target_and_later=True) for key in REGRESSION_TRIGGERS
)
STANDARD_REASONS = _choices(DISQUALIFICATION_REASONS)
STANDARD_BLOCKERS = _choices(BLOCKER_CATEGORIES)


class PipelineDocument(Frozen):
    """A pipeline as an admin writes it (JSON via the API, YAML or JSON via the CLI)."""

    key: Key
    label: Label
    stages: tuple[Stage, ...] = Field(max_length=50)
    """The active stages in order; leaving the last one forward means won."""
    late_stages: tuple[str, ...] = Field(default=(), max_length=50)
    """Stages whose deals count as late in the cycle (for notifications)."""
    regression_triggers: tuple[RegressionTrigger, ...] = Field(
        default=STANDARD_TRIGGERS, max_length=50
    )
    """Left out: the standard six, each reopening the stage moved back to and later."""
    disqualification_reasons: tuple[Choice, ...] = Field(default=STANDARD_REASONS, max_length=50)
    blocker_categories: tuple[Choice, ...] = Field(default=STANDARD_BLOCKERS, max_length=50)

    @cached_property
    def stage_keys(self) -> tuple[str, ...]:
        return tuple(stage.key for stage in self.stages)

    @cached_property
    def _by_key(self) -> dict[str, Stage]:
        return {stage.key: stage for stage in self.stages}

    def stage(self, key: str) -> Stage:
        return self._by_key[key]

    def index(self, key: str) -> int:
        return self.stage_keys.index(key)

    @cached_property
    def criterion_keys(self) -> tuple[str, ...]:
        return tuple(c.key for stage in self.stages for c in stage.exit_criteria)

    @cached_property
    def trigger_keys(self) -> tuple[str, ...]:
        return tuple(trigger.key for trigger in self.regression_triggers)

    @cached_property
    def reason_keys(self) -> tuple[str, ...]:
        return tuple(reason.key for reason in self.disqualification_reasons)

    @cached_property
    def blocker_keys(self) -> tuple[str, ...]:
        return tuple(category.key for category in self.blocker_categories)

    def reopened_by(self, trigger: str, to_stage: str) -> tuple[str, ...]:
        """The exit criteria a regression to `to_stage` with `trigger` reopens."""
        rule = next((t for t in self.regression_triggers if t.key == trigger), None)
        if rule is None:
            return ()
        if rule.reopens_target_and_later:
            later = self.stages[self.index(to_stage) :]
            return tuple(criterion.key for stage in later for criterion in stage.exit_criteria)
        return rule.reopens

    def stages_between(self, from_stage: str, to_stage: str | None) -> tuple[Stage, ...]:
        """Stages left when moving from `from_stage` forward to `to_stage` (None: to won)."""
        end = len(self.stages) if to_stage is None else self.index(to_stage)
        return self.stages[self.index(from_stage) : end]


class Pipeline(PipelineDocument):
    """One published version of a pipeline document."""

    version: int = Field(ge=1)

    def document(self) -> PipelineDocument:
        """The document without its version (what `pipelines export` writes)."""
        return PipelineDocument.model_validate(self.model_dump(exclude={"version"}))


class UnknownPipelineVersion(LookupError):
    """A fold or a decision needs a version its catalog does not hold (the caller loads it)."""

    def __init__(self, key: str, version: int | None) -> None:
        super().__init__(f"pipeline {key!r} version {version} is not in the catalog")
        self.key, self.version = key, version


@dataclass(frozen=True)
class Catalog:
    """Pipeline versions by key, each key's versions 1..n in order. Immutable: versions are
    never changed once published, so a catalog only ever grows."""

    versions: Mapping[str, tuple[Pipeline, ...]] = field(default_factory=dict)

    def get(self, key: str, version: int) -> Pipeline:
        found = self.versions.get(key, ())
        if not 1 <= version <= len(found):
            raise UnknownPipelineVersion(key, version)
        return found[version - 1]

    def latest(self, key: str) -> Pipeline | None:
        found = self.versions.get(key, ())
        return found[-1] if found else None

    def has(self, key: str, version: int) -> bool:
        return 1 <= version <= len(self.versions.get(key, ()))

    def newest(self, key: str) -> int:
        """The highest version held for `key` (0: none)."""
        return len(self.versions.get(key, ()))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted(self.versions))

    def with_versions(self, key: str, pipelines: Iterable[Pipeline]) -> Catalog:
        """This catalog plus later versions of `key` (each must follow the one before)."""
        known = list(self.versions.get(key, ()))
        for pipeline in pipelines:
            if pipeline.key != key or pipeline.version > len(known) + 1:
                raise ValueError(
                    f"{pipeline.key} v{pipeline.version} does not follow v{len(known)}"
                )
            if pipeline.version == len(known) + 1:
                known.append(pipeline)
        return Catalog({**self.versions, key: tuple(known)})


def _criteria(*pairs: tuple[str, str]) -> tuple[Criterion, ...]:
    return tuple(Criterion(key=key, label=label) for key, label in pairs)


def _templates(*pairs: tuple[str, int]) -> tuple[NextStepTemplate, ...]:
    return tuple(NextStepTemplate(description=d, due_in_days=n) for d, n in pairs)


_SIZED = ("amount", "close_date")
_SPONSORED = ("amount", "close_date", "economic_buyer")

# Published version 1 of `default`: deals opened on a fresh install are judged by it, so it
# never changes here. A new default is a new version (PUT /v1/pipelines/default), in the log.
DEFAULT_PIPELINE = Pipeline(
    key="default",
    label="Buyer-aligned (default)",
    version=1,
    stages=(
        Stage(
            key="discovery",
            label="Discovery",
            probability=0.10,
            expected_days=7,
            exit_criteria=_criteria(
                ("budget_confirmed", "Budget range confirmed"),
                ("decision_maker_identified", "Decision maker identified"),
                ("pain_documented", "Pain documented with its cost"),
                ("timeline_committed", "Timeline committed within 90 days"),
            ),
            required_fields=(),
            next_step_templates=_templates(
                ("Discovery call: confirm budget, pain and its cost", 3),
                ("Identify the decision maker and the buying timeline", 7),
            ),
        ),
        Stage(
            key="qualification",
            label="Qualification",
            probability=0.25,
            expected_days=14,
            exit_criteria=_criteria(
                ("economic_buyer_engaged", "Economic buyer engaged"),
                ("technical_requirements_documented", "Technical requirements documented"),
                ("evaluation_criteria_confirmed", "Evaluation criteria confirmed"),
                ("proposal_requested", "Proposal requested by the buyer"),
            ),
            required_fields=_SIZED,
            next_step_templates=_templates(
                ("Meet the economic buyer", 7),
                ("Document technical requirements and evaluation criteria", 10),
            ),
        ),
        Stage(
            key="proposal",
            label="Proposal",
            probability=0.50,
            expected_days=21,
            exit_criteria=_criteria(
                ("proposal_reviewed", "Proposal reviewed with the decision maker"),
                ("pricing_feedback_received", "Feedback on pricing and terms received"),
                ("scope_agreed", "Verbal agreement on scope"),
                ("legal_review_started", "Legal review started"),
            ),
            required_fields=_SPONSORED,
            next_step_templates=_templates(
                ("Review the proposal with the decision maker", 7),
                ("Collect feedback on pricing and terms", 14),
            ),
        ),
        Stage(
            key="negotiation",
            label="Negotiation",
            probability=0.75,
            expected_days=28,
            exit_criteria=_criteria(
                ("stakeholders_aligned", "All stakeholders aligned"),
                ("contract_terms_agreed", "Contract terms agreed"),
                ("po_process_started", "Purchase-order process started"),
                ("implementation_timeline_confirmed", "Implementation timeline confirmed"),
            ),
            required_fields=_SPONSORED,
            next_step_templates=_templates(
                ("Align all stakeholders on terms", 7),
                ("Start the purchase-order process with procurement", 14),
            ),
        ),
        Stage(
            key="closing",
            label="Closing",
            probability=0.90,
            expected_days=10,
            exit_criteria=_criteria(
                ("contract_signed", "Contract signed or purchase-order number issued"),
            ),
            required_fields=_SPONSORED,
            next_step_templates=_templates(
                ("Collect the signed contract or PO number", 5),
            ),
        ),
    ),
    regression_triggers=(
        RegressionTrigger(key="qualification_assumption_wrong", reopens_target_and_later=True),
        RegressionTrigger(
            key="stakeholder_changed",
            reopens=(
                "decision_maker_identified",
                "economic_buyer_engaged",
                "stakeholders_aligned",
            ),
        ),
        RegressionTrigger(
            key="requirements_changed",
            reopens=(
                "technical_requirements_documented",
                "evaluation_criteria_confirmed",
                "scope_agreed",
            ),
        ),
        RegressionTrigger(
            key="decision_maker_pushed_back",
            reopens=("proposal_reviewed", "contract_terms_agreed"),
        ),
        RegressionTrigger(
            key="timeline_extended",
            reopens=("timeline_committed", "implementation_timeline_confirmed"),
        ),
        RegressionTrigger(key="buying_process_restarted", reopens_target_and_later=True),
    ),
    late_stages=("negotiation", "closing"),
)

BUILT_IN = Catalog({DEFAULT_PIPELINE.key: (DEFAULT_PIPELINE,)})
"""What a fresh install knows: the default pipeline, version 1, with no configuration."""
