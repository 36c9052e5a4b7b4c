"""Pipelines: versioned configuration of stages, exit criteria, required fields and templates.

A new pipeline version never rewrites history: every stage change records the version it
was judged under.
"""

from __future__ import annotations

from functools import cached_property

from pydantic import BaseModel, ConfigDict

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


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Criterion(Frozen):
    key: str
    label: str


class NextStepTemplate(Frozen):
    description: str
    due_in_days: int


class Stage(Frozen):
    key: str
    label: str
    probability: float
    expected_days: int
    exit_criteria: tuple[Criterion, ...]
    required_fields: tuple[str, ...]
    next_step_templates: tuple[NextStepTemplate, ...]


class RegressionTrigger(Frozen):
    """Why a deal moved back, and which exit criteria that reopens: evidence recorded before
    the regression no longer meets them, so advancing again needs fresh evidence."""

    key: str
    reopens: tuple[str, ...] = ()
    reopens_target_and_later: bool = False
    """Reopen every criterion of the stage moved back to and of each stage after it."""


class Pipeline(Frozen):
    key: str
    version: int
    stages: tuple[Stage, ...]
    """The active stages in order; leaving the last one forward means won."""
    regression_triggers: tuple[RegressionTrigger, ...]

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

    @property
    def criterion_keys(self) -> tuple[str, ...]:
        return tuple(c.key for stage in self.stages for c in stage.exit_criteria)

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


def _criteria(*pairs: tuple[str, str]) -> tuple[Criterion, ...]:
    return tuple(Criterion(key=key, label=label) for key, label in pairs)


def _templates(*pairs: tuple[str, int]) -> tuple[NextStepTemplate, ...]:
    return tuple(NextStepTemplate(description=d, due_in_days=n) for d, n in pairs)


_SIZED = ("amount", "close_date")
_SPONSORED = ("amount", "close_date", "economic_buyer")

DEFAULT_PIPELINE = Pipeline(
    key="default",
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
)

PIPELINES: dict[str, Pipeline] = {DEFAULT_PIPELINE.key: DEFAULT_PIPELINE}
