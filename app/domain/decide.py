"""The decider: given a deal's state and a command, the events it produces, or a refusal.

Pure: time and the actor arrive in `Context`; ids arrive in the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never
from uuid import UUID

from pydantic import ValidationError

from app.domain import commands as c
from app.domain import events as e
from app.domain.errors import (
    CriteriaNotMet,
    DealAlreadyExists,
    DealClosed,
    DealNotFound,
    InvalidCommand,
    InvalidTransition,
    NotFound,
    OccurredInFuture,
    OverrideNotAllowed,
    UnknownValue,
)
from app.domain.pipeline import (
    ACTIVE,
    ACTIVITY_TYPES,
    BUILT_IN,
    EVIDENCE_KINDS,
    NURTURE,
    STAKEHOLDER_ROLES,
    Catalog,
    Pipeline,
    Stage,
)
from app.domain.state import DealState

OVERRIDE_ROLES = ("manager", "admin")


@dataclass(frozen=True)
class Actor:
    """Who acts: an API key's id, role and name (events record the id)."""

    id: str
    role: str
    name: str = ""


@dataclass(frozen=True)
class Context:
    now: datetime
    actor: Actor
    max_clock_skew: timedelta = timedelta(seconds=300)
    """How far past `now` a reported time may lie (clocks differ); later is the future."""
    pipelines: Catalog = BUILT_IN
    """The pipeline versions known: the deal's own, and the latest of the one a new deal
    opens on (or a migration moves to)."""


def _not_in_future(field: str, moment: datetime, ctx: Context) -> None:
    """Evidence or activity from the future would meet criteria and silence flags for years."""
    latest = ctx.now + ctx.max_clock_skew
    if moment > latest:
        raise OccurredInFuture(field, moment, latest)


def _one_of(field: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UnknownValue(field, value, allowed)


def _require_open(state: DealState) -> None:
    if state.is_terminal:
        raise DealClosed(
            f"deal is {state.status}: no further stage change is accepted", status_now=state.status
        )
    if state.status == NURTURE:
        raise InvalidTransition("deal is in nurture: reactivate it first", status_now=NURTURE)


def _entered(stage: Stage, ctx: Context) -> e.NextStepSet | None:
    """Entering a stage proposes its first next-step template."""
    if not stage.next_step_templates:
        return None
    template = stage.next_step_templates[0]
    return e.NextStepSet(
        description=template.description,
        due_date=(ctx.now + timedelta(days=template.due_in_days)).date(),
        origin="stage_template",
    )


def _with_next_step(event: e.Event, stage: Stage, ctx: Context) -> list[e.DomainEvent]:
    proposed = _entered(stage, ctx)
    return [event, proposed] if proposed else [event]  # type: ignore[list-item]


def _evidence_map(
    state: DealState, stages: Sequence[Stage]
) -> tuple[dict[str, tuple[UUID, ...]], list[str]]:
    """Evidence per exit criterion of `stages`, and the criteria nothing supports."""
    met: dict[str, tuple[UUID, ...]] = {}
    unmet: list[str] = []
    for stage in stages:
        for criterion in stage.exit_criteria:
            ids = state.evidence_for(criterion.key)
            met[criterion.key] = ids
            if not ids:
                unmet.append(criterion.key)
    return met, unmet


def _override(reason: str | None, ctx: Context) -> e.Override | None:
    if reason is None:
        return None
    if ctx.actor.role not in OVERRIDE_ROLES:
        raise OverrideNotAllowed(
            f"only a manager may override exit criteria (you are {ctx.actor.role})"
        )
    if not reason.strip():
        raise InvalidCommand("an override needs a reason")
    return e.Override(
        reason=reason, by=ctx.actor.id, by_name=ctx.actor.name or None, by_role=ctx.actor.role
    )


def evidence_needed(
    state: DealState, target: str | None, pipeline: Pipeline
) -> tuple[dict[str, tuple[UUID, ...]], list[str]]:
    """What moving forward to `target` (None: won) stands on under `pipeline` (the deal's
    version): each exit criterion of the stages it leaves, and any criterion of earlier
    stages a regression reopened, with the evidence meeting it now; and the criteria nothing
    meets."""
    met, unmet = _evidence_map(state, pipeline.stages_between(state.stage, target))
    end = len(pipeline.stages) if target is None else pipeline.index(target)
    before = {criterion.key for stage in pipeline.stages[:end] for criterion in stage.exit_criteria}
    for criterion in state.reopened:
        if criterion in before and criterion not in met:
            met[criterion] = state.evidence_for(criterion)
            if not met[criterion]:
                unmet.append(criterion)
    return met, unmet


def _judge_forward(
    state: DealState, target: str | None, override: e.Override | None, pipeline: Pipeline
) -> dict[str, tuple[UUID, ...]]:
    met, unmet = evidence_needed(state, target, pipeline)
    missing = state.missing_required_fields(pipeline, target) if target is not None else []
    if override is not None:
        unmet = []
    if unmet or missing:
        raise CriteriaNotMet(target or "won", unmet, missing)
    return met


def _advance(
    state: DealState, cmd: c.AdvanceStage, ctx: Context, pipeline: Pipeline
) -> list[e.DomainEvent]:
    _one_of("to_stage", cmd.to_stage, pipeline.stage_keys)
    _require_open(state)
    if pipeline.index(cmd.to_stage) <= pipeline.index(state.stage):
        raise InvalidTransition(
            f"deal is already in {state.stage}; advancing to {cmd.to_stage} is not forward"
            " (use regress to move back)",
            stage=state.stage,
        )
    override = _override(cmd.override_reason, ctx)
    criteria = _judge_forward(state, cmd.to_stage, override, pipeline)
    advanced = e.StageAdvanced(
        from_stage=state.stage,
        to_stage=cmd.to_stage,
        criteria=criteria,
        pipeline_version=pipeline.version,
        override=override,
        note=cmd.note,
    )
    return _with_next_step(advanced, pipeline.stage(cmd.to_stage), ctx)


def _win(state: DealState, cmd: c.WinDeal, ctx: Context, pipeline: Pipeline) -> list[e.DomainEvent]:
    _require_open(state)
    override = _override(cmd.override_reason, ctx)
    criteria = _judge_forward(state, None, override, pipeline)
    won = e.DealWon(
        from_stage=state.stage,
        criteria=criteria,
        pipeline_version=pipeline.version,
        override=override,
        note=cmd.note,
    )
    return [won, *_close_open_work(state, "deal won")]


def _close_open_work(state: DealState, outcome: str) -> list[e.DomainEvent]:
    """An outcome closes the deal's open blockers and next step, with the outcome as why."""
    closing: list[e.DomainEvent] = [
        e.BlockerResolved(blocker_id=blocker_id, resolution=outcome)
        for blocker_id in state.blockers
    ]
    if state.next_step is not None:
        closing.append(e.NextStepCancelled(description=state.next_step.description, reason=outcome))
    return closing


def _regress(
    state: DealState, cmd: c.RegressStage, ctx: Context, pipeline: Pipeline
) -> list[e.DomainEvent]:
    _one_of("to_stage", cmd.to_stage, pipeline.stage_keys)
    _one_of("trigger", cmd.trigger, pipeline.trigger_keys)
    _require_open(state)
    if pipeline.index(cmd.to_stage) >= pipeline.index(state.stage):
        raise InvalidTransition(
            f"regression must go to a stage before {state.stage}", stage=state.stage
        )
    regressed = e.StageRegressed(
        from_stage=state.stage,
        to_stage=cmd.to_stage,
        trigger=cmd.trigger,
        note=cmd.note,
        pipeline_version=pipeline.version,
    )
    return _with_next_step(regressed, pipeline.stage(cmd.to_stage), ctx)


def _nurture(state: DealState, cmd: c.NurtureDeal, ctx: Context) -> list[e.DomainEvent]:
    _require_open(state)
    if not cmd.reason.strip():
        raise InvalidCommand("nurture needs a reason")
    if cmd.resume_on <= ctx.now.date():
        raise InvalidCommand("resume_on must be in the future", resume_on=str(cmd.resume_on))
    return [e.DealNurtured(from_stage=state.stage, reason=cmd.reason, resume_on=cmd.resume_on)]


def _reactivate(
    state: DealState, cmd: c.ReactivateDeal, ctx: Context, pipeline: Pipeline
) -> list[e.DomainEvent]:
    if state.is_terminal:
        raise DealClosed(f"deal is {state.status}: it cannot be reactivated")
    if state.status != NURTURE or state.nurtured_from is None:
        raise InvalidTransition("only a deal in nurture can be reactivated")
    to_stage = cmd.to_stage or state.nurtured_from
    _one_of("to_stage", to_stage, pipeline.stage_keys)
    if pipeline.index(to_stage) > pipeline.index(state.nurtured_from):
        raise InvalidTransition(
            f"a reactivated deal returns to {state.nurtured_from} or an earlier stage",
            nurtured_from=state.nurtured_from,
        )
    reactivated = e.DealReactivated(to_stage=to_stage, pipeline_version=pipeline.version)
    return _with_next_step(reactivated, pipeline.stage(to_stage), ctx)


def _disqualify(state: DealState, cmd: c.DisqualifyDeal, pipeline: Pipeline) -> list[e.DomainEvent]:
    _one_of("reason", cmd.reason, pipeline.reason_keys)
    if state.is_terminal:
        raise DealClosed(f"deal is already {state.status}")
    disqualified = e.DealDisqualified(from_stage=state.stage, reason=cmd.reason, note=cmd.note)
    return [disqualified, *_close_open_work(state, f"deal disqualified: {cmd.reason}")]


def _open(state: DealState, cmd: c.OpenDeal, ctx: Context) -> list[e.DomainEvent]:
    if state.exists:
        raise DealAlreadyExists("a deal with this id or external reference already exists")
    pipeline = ctx.pipelines.latest(cmd.pipeline)
    if pipeline is None:
        raise UnknownValue("pipeline", cmd.pipeline, ctx.pipelines.keys)
    first = pipeline.stages[0]
    opened = e.DealOpened(
        name=cmd.name,
        owner=cmd.owner,
        account=cmd.account,
        amount=cmd.amount,
        currency=cmd.currency,
        close_date=cmd.close_date,
        pipeline=pipeline.key,
        pipeline_version=pipeline.version,
        stage=first.key,
        external_ref=cmd.external_ref,
    )
    return _with_next_step(opened, first, ctx)


def _record_evidence(
    state: DealState, cmd: c.RecordEvidence, ctx: Context, pipeline: Pipeline
) -> list[e.DomainEvent]:
    _one_of("kind", cmd.kind, EVIDENCE_KINDS)
    _not_in_future("occurred_at", cmd.occurred_at, ctx)
    if not cmd.criteria:
        raise InvalidCommand("evidence must support at least one exit criterion")
    known = pipeline.criterion_keys
    for criterion in cmd.criteria:
        _one_of("criteria", criterion, known)
    if cmd.evidence_id in state.evidence:
        raise InvalidCommand("evidence id already recorded", evidence_id=str(cmd.evidence_id))
    return [
        e.EvidenceRecorded(
            evidence_id=cmd.evidence_id,
            kind=cmd.kind,
            criteria=tuple(dict.fromkeys(cmd.criteria)),
            summary=cmd.summary,
            occurred_at=cmd.occurred_at,
            source=cmd.source,
            recorded_by=ctx.actor.id,
        )
    ]


def _retract(state: DealState, cmd: c.RetractEvidence, ctx: Context) -> list[e.DomainEvent]:
    item = state.evidence.get(cmd.evidence_id)
    if item is None:
        raise NotFound(f"evidence {cmd.evidence_id} is not recorded on this deal")
    if item.retracted:
        raise InvalidTransition(f"evidence {cmd.evidence_id} is already retracted")
    return [
        e.EvidenceRetracted(
            evidence_id=cmd.evidence_id, reason=cmd.reason, retracted_by=ctx.actor.id
        )
    ]


def _migrate(state: DealState, cmd: c.MigrateDeal, ctx: Context) -> list[e.DomainEvent]:
    """Move the deal to another version of its pipeline: explicit, with a reason, one event;
    the events before it keep the version they were judged by."""
    if state.is_terminal:
        raise DealClosed(f"deal is {state.status}: its history stays on its version")
    if state.status == NURTURE:
        raise InvalidTransition("deal is in nurture: reactivate it first", status_now=NURTURE)
    if not cmd.reason.strip():
        raise InvalidCommand("a migration needs a reason")
    key, newest = state.pipeline_key, ctx.pipelines.newest(state.pipeline_key)
    to_version = newest if cmd.to_version is None else cmd.to_version
    if not ctx.pipelines.has(key, to_version):
        raise UnknownValue("to_version", to_version, [str(v) for v in range(1, newest + 1)])
    if to_version == state.pipeline_version:
        return []
    current, target = (
        ctx.pipelines.get(key, state.pipeline_version),
        ctx.pipelines.get(key, to_version),
    )
    for stage, mapped in cmd.stage_mapping.items():
        _one_of("stage_mapping", stage, current.stage_keys)
        _one_of(f"stage_mapping.{stage}", mapped, target.stage_keys)
    to_stage = cmd.stage_mapping.get(state.stage, state.stage)
    if to_stage not in target.stage_keys:
        raise InvalidCommand(
            f"version {to_version} of {key!r} has no stage {state.stage!r}: say where the deal"
            f" goes in stage_mapping (one of: {', '.join(target.stage_keys)})",
            stage=state.stage,
            allowed=list(target.stage_keys),
        )
    migrated = e.DealMigrated(
        pipeline=key,
        from_version=state.pipeline_version,
        to_version=to_version,
        from_stage=state.stage,
        to_stage=to_stage,
        reason=cmd.reason,
    )
    if to_stage == state.stage:
        return [migrated]
    return _with_next_step(migrated, target.stage(to_stage), ctx)


def _change(state: DealState, cmd: c.ChangeDeal) -> list[e.DomainEvent]:
    events: list[e.DomainEvent] = []
    amount = state.amount if cmd.amount is c.UNSET else cmd.amount
    currency = state.currency if cmd.currency is c.UNSET else cmd.currency
    if (amount, currency) != (state.amount, state.currency):
        events.append(e.AmountChanged(amount=amount, currency=currency))
    if cmd.close_date is not c.UNSET and cmd.close_date != state.close_date:
        events.append(e.CloseDateChanged(close_date=cmd.close_date))
    if cmd.owner is not c.UNSET and cmd.owner != state.owner:
        events.append(e.OwnerAssigned(owner=cmd.owner))
    return events


def decide(state: DealState, command: c.Command, ctx: Context) -> list[e.DomainEvent]:
    """The events `command` produces on `state`; raises a DomainError to refuse it.

    An empty list means the command changes nothing (e.g. a PATCH with the same values).
    A command whose values no event can hold (a validation error) is an InvalidCommand.
    """
    try:
        return _decide(state, command, ctx)
    except ValidationError as exc:
        where = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidCommand(f"{type(command).__name__}: {where}") from None


def _decide(state: DealState, command: c.Command, ctx: Context) -> list[e.DomainEvent]:
    if isinstance(command, c.OpenDeal):
        return _open(state, command, ctx)
    if not state.exists:
        raise DealNotFound(f"deal {state.deal_id} does not exist")
    pipeline = state.pipeline_in(ctx.pipelines)
    match command:
        case c.OpenDeal():
            raise AssertionError("handled above")
        case c.RecordBuyerActivity():
            _one_of("type", command.activity_type, ACTIVITY_TYPES)
            _not_in_future("occurred_at", command.occurred_at, ctx)
            return [
                e.BuyerActivityRecorded(
                    activity_type=command.activity_type,
                    occurred_at=command.occurred_at,
                    details=command.details,
                )
            ]
        case c.RecordEvidence():
            return _record_evidence(state, command, ctx, pipeline)
        case c.RetractEvidence():
            return _retract(state, command, ctx)
        case c.AdvanceStage():
            return _advance(state, command, ctx, pipeline)
        case c.RegressStage():
            return _regress(state, command, ctx, pipeline)
        case c.NurtureDeal():
            return _nurture(state, command, ctx)
        case c.ReactivateDeal():
            return _reactivate(state, command, ctx, pipeline)
        case c.DisqualifyDeal():
            return _disqualify(state, command, pipeline)
        case c.WinDeal():
            return _win(state, command, ctx, pipeline)
        case c.RaiseBlocker():
            _one_of("category", command.category, pipeline.blocker_keys)
            if state.is_terminal:
                raise DealClosed(f"deal is {state.status}")
            return [
                e.BlockerRaised(
                    blocker_id=command.blocker_id,
                    category=command.category,
                    description=command.description,
                )
            ]
        case c.ResolveBlocker():
            if command.blocker_id not in state.blockers:
                raise NotFound(f"no open blocker {command.blocker_id} on this deal")
            return [e.BlockerResolved(blocker_id=command.blocker_id, resolution=command.resolution)]
        case c.SetNextStep():
            if state.is_terminal:
                raise DealClosed(f"deal is {state.status}")
            return [e.NextStepSet(description=command.description, due_date=command.due_date)]
        case c.CompleteNextStep():
            if state.next_step is None:
                raise InvalidTransition("the deal has no open next step")
            return [e.NextStepCompleted(description=state.next_step.description)]
        case c.AddStakeholder():
            _one_of("role", command.role, STAKEHOLDER_ROLES)
            return [
                e.StakeholderAdded(
                    stakeholder_id=command.stakeholder_id,
                    name=command.name,
                    role=command.role,
                    title=command.title,
                )
            ]
        case c.ChangeStakeholder():
            if command.stakeholder_id not in state.stakeholders:
                raise NotFound(f"no stakeholder {command.stakeholder_id} on this deal")
            if command.role is not None:
                _one_of("role", command.role, STAKEHOLDER_ROLES)
            return [
                e.StakeholderChanged(
                    stakeholder_id=command.stakeholder_id, role=command.role, title=command.title
                )
            ]
        case c.StakeholderLeaves():
            if command.stakeholder_id not in state.stakeholders:
                raise NotFound(f"no stakeholder {command.stakeholder_id} on this deal")
            return [e.StakeholderLeft(stakeholder_id=command.stakeholder_id)]
        case c.ChangeDeal():
            return _change(state, command)
        case c.MigrateDeal():
            return _migrate(state, command, ctx)
        case _:
            assert_never(command)


__all__ = ["ACTIVE", "Actor", "Context", "OverrideNotAllowed", "decide"]
