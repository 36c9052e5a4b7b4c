"""Deal state: always the fold of the deal's stream (`evolve` over its events)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar, assert_never
from uuid import UUID

from app.domain.events import (
    AmountChanged,
    BlockerRaised,
    BlockerResolved,
    BuyerActivityRecorded,
    CloseDateChanged,
    DealDisqualified,
    DealMigrated,
    DealNurtured,
    DealOpened,
    DealReactivated,
    DealWon,
    DomainEvent,
    EvidenceRecorded,
    EvidenceRetracted,
    ExternalRef,
    NextStepCancelled,
    NextStepCompleted,
    NextStepSet,
    OwnerAssigned,
    StageAdvanced,
    StageRegressed,
    StakeholderAdded,
    StakeholderChanged,
    StakeholderLeft,
)
from app.domain.pipeline import (
    ACTIVE,
    BUILT_IN,
    DISQUALIFIED,
    NURTURE,
    WON,
    Catalog,
    Pipeline,
)


@dataclass(frozen=True)
class Evidence:
    evidence_id: UUID
    kind: str
    criteria: tuple[str, ...]
    summary: str
    occurred_at: datetime
    recorded_at: datetime
    retracted: bool = False
    version: int = 0
    """The deal's version when it was recorded (a regression reopens what came before)."""
    retracted_at: datetime | None = None


@dataclass(frozen=True)
class Blocker:
    blocker_id: UUID
    category: str
    description: str
    raised_at: datetime


@dataclass(frozen=True)
class NextStep:
    description: str
    due_date: date
    origin: str
    set_at: datetime


@dataclass(frozen=True)
class Stakeholder:
    stakeholder_id: UUID
    name: str
    role: str
    title: str | None


class Recorded(NamedTuple):
    """An event as the fold sees it: with its place in the stream and its times. A named
    tuple, not a frozen dataclass: one is made per event read, and this is ~3x cheaper."""

    event: DomainEvent
    version: int
    occurred_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class DealState:
    deal_id: UUID
    version: int = 0
    name: str = ""
    owner: str = ""
    account: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    close_date: date | None = None
    pipeline_key: str = "default"
    pipeline_version: int = 1
    stage: str = ""
    status: str = ""
    stage_entered_at: datetime | None = None
    external_ref: ExternalRef | None = None
    evidence: dict[UUID, Evidence] = field(default_factory=dict)
    blockers: dict[UUID, Blocker] = field(default_factory=dict)
    next_step: NextStep | None = None
    stakeholders: dict[UUID, Stakeholder] = field(default_factory=dict)
    last_buyer_activity_at: datetime | None = None
    nurtured_from: str | None = None
    nurture_reason: str | None = None
    nurture_resume_on: date | None = None
    opened_at: datetime | None = None
    reopened: dict[str, int] = field(default_factory=dict)
    """Criteria a regression reopened -> its version: only later evidence meets them."""
    earned: dict[str, tuple[UUID, ...]] = field(default_factory=dict)
    """Exit criteria of the stages this deal has left forward (and not returned to since),
    with the evidence that met each when it advanced."""

    @property
    def exists(self) -> bool:
        return self.version > 0

    @property
    def is_terminal(self) -> bool:
        return self.status in (WON, DISQUALIFIED)

    def pipeline_in(self, pipelines: Catalog) -> Pipeline:
        """The pipeline version this deal lives under, from `pipelines`."""
        return pipelines.get(self.pipeline_key, self.pipeline_version)

    def evidence_for(self, criterion: str) -> tuple[UUID, ...]:
        """Unretracted evidence supporting `criterion`, oldest first; after a regression that
        reopened it, only evidence recorded since."""
        since = self.reopened.get(criterion, 0)
        return tuple(
            e.evidence_id
            for e in self.evidence.values()
            if criterion in e.criteria and not e.retracted and e.version > since
        )

    def unsupported_earned_criteria(self) -> dict[str, tuple[UUID, ...]]:
        """Criteria an advance was earned on whose evidence has all been retracted since, and
        that nothing else supports now: criterion -> the retracted evidence."""
        return {
            criterion: ids
            for criterion, ids in self.earned.items()
            if ids and self._all_retracted(ids) and not self.evidence_for(criterion)
        }

    def _all_retracted(self, ids: tuple[UUID, ...]) -> bool:
        """Every one of `ids` retracted (or unknown). A loop, not all() over a generator:
        the flags judge it for every earned criterion after every evidence event."""
        for i in ids:
            item = self.evidence.get(i)
            if item is not None and not item.retracted:
                return False
        return True

    def has_field(self, key: str) -> bool:
        if key == "amount":
            return self.amount is not None
        if key == "close_date":
            return self.close_date is not None
        if key == "economic_buyer":
            return any(s.role == "economic_buyer" for s in self.stakeholders.values())
        raise KeyError(key)

    def missing_required_fields(self, pipeline: Pipeline, stage_key: str) -> list[str]:
        """Fields `stage_key` of `pipeline` requires that the deal lacks (none for
        non-pipeline stages)."""
        if stage_key not in pipeline.stage_keys:
            return []
        stage = pipeline.stage(stage_key)
        return [key for key in stage.required_fields if not self.has_field(key)]


T = TypeVar("T")
_FIELDS: dict[type, frozenset[str]] = {}


def replace(obj: T, **changes: Any) -> T:
    """`dataclasses.replace` for the frozen dataclasses here, without re-running __init__:
    the fold calls it for every event, and this is ~5x cheaper. Same checks on names."""
    cls = type(obj)
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
    if not changes.keys() <= known:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(changes.keys() - known)}")
    new = object.__new__(cls)
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new


def _enter(state: DealState, stage: str, at: datetime, **changes: object) -> DealState:
    return replace(state, stage=stage, stage_entered_at=at, **changes)


def evolve(state: DealState, recorded: Recorded, pipelines: Catalog = BUILT_IN) -> DealState:
    """The state after one more event. Pure; never refuses an event (history is history).
    `pipelines` holds the version the deal is on (a regression reopens by its rules)."""
    state = replace(state, version=recorded.version)
    at = recorded.recorded_at
    event = recorded.event
    match event:
        case DealOpened():
            return _enter(
                state,
                event.stage,
                at,
                name=event.name,
                owner=event.owner,
                account=event.account,
                amount=event.amount,
                currency=event.currency,
                close_date=event.close_date,
                pipeline_key=event.pipeline,
                pipeline_version=event.pipeline_version,
                status=ACTIVE,
                external_ref=event.external_ref,
                opened_at=at,
            )
        case BuyerActivityRecorded():
            latest = state.last_buyer_activity_at
            if latest is None or event.occurred_at > latest:
                return replace(state, last_buyer_activity_at=event.occurred_at)
            return state
        case EvidenceRecorded():
            item = Evidence(
                event.evidence_id,
                event.kind,
                event.criteria,
                event.summary,
                event.occurred_at,
                at,
                version=recorded.version,
            )
            return replace(state, evidence={**state.evidence, event.evidence_id: item})
        case EvidenceRetracted():
            retracted = replace(state.evidence[event.evidence_id], retracted=True, retracted_at=at)
            return replace(state, evidence={**state.evidence, event.evidence_id: retracted})
        case StageAdvanced():
            earned = {**state.earned, **event.criteria}
            return _enter(
                state, event.to_stage, at, pipeline_version=event.pipeline_version, earned=earned
            )
        case StageRegressed():
            pipeline = state.pipeline_in(pipelines)
            back = pipeline.stages[pipeline.index(event.to_stage) :]
            again = {criterion.key for stage in back for criterion in stage.exit_criteria}
            reopened = dict.fromkeys(
                pipeline.reopened_by(event.trigger, event.to_stage), recorded.version
            )
            return _enter(
                state,
                event.to_stage,
                at,
                pipeline_version=event.pipeline_version,
                reopened={**state.reopened, **reopened},
                # Moving back re-judges what it passes, and owns up to retracted evidence.
                earned={
                    k: v
                    for k, v in state.earned.items()
                    if k not in again and not state._all_retracted(v)
                },
            )
        case DealNurtured():
            return _enter(
                state,
                NURTURE,
                at,
                status=NURTURE,
                nurtured_from=event.from_stage,
                nurture_reason=event.reason,
                nurture_resume_on=event.resume_on,
            )
        case DealReactivated():
            return _enter(
                state,
                event.to_stage,
                at,
                status=ACTIVE,
                nurtured_from=None,
                nurture_reason=None,
                nurture_resume_on=None,
                pipeline_version=event.pipeline_version,
            )
        case DealDisqualified():
            return _enter(state, DISQUALIFIED, at, status=DISQUALIFIED)
        case DealWon():
            return _enter(state, WON, at, status=WON)
        case DealMigrated():
            if event.to_stage == state.stage:
                return replace(state, pipeline_version=event.to_version)
            return _enter(state, event.to_stage, at, pipeline_version=event.to_version)
        case BlockerRaised():
            blocker = Blocker(event.blocker_id, event.category, event.description, at)
            return replace(state, blockers={**state.blockers, event.blocker_id: blocker})
        case BlockerResolved():
            blockers = {k: v for k, v in state.blockers.items() if k != event.blocker_id}
            return replace(state, blockers=blockers)
        case NextStepSet():
            step = NextStep(event.description, event.due_date, event.origin, at)
            return replace(state, next_step=step)
        case NextStepCompleted() | NextStepCancelled():
            return replace(state, next_step=None)
        case StakeholderAdded():
            person = Stakeholder(event.stakeholder_id, event.name, event.role, event.title)
            return replace(
                state, stakeholders={**state.stakeholders, person.stakeholder_id: person}
            )
        case StakeholderChanged():
            person = state.stakeholders[event.stakeholder_id]
            person = replace(
                person, role=event.role or person.role, title=event.title or person.title
            )
            return replace(
                state, stakeholders={**state.stakeholders, person.stakeholder_id: person}
            )
        case StakeholderLeft():
            people = {k: v for k, v in state.stakeholders.items() if k != event.stakeholder_id}
            return replace(state, stakeholders=people)
        case AmountChanged():
            return replace(state, amount=event.amount, currency=event.currency)
        case CloseDateChanged():
            return replace(state, close_date=event.close_date)
        case OwnerAssigned():
            return replace(state, owner=event.owner)
        case _:
            assert_never(event)


def fold(
    deal_id: UUID,
    history: list[Recorded],
    state: DealState | None = None,
    pipelines: Catalog = BUILT_IN,
) -> DealState:
    """The deal's state after `history` (from scratch, or on top of `state`), judged by the
    pipeline versions in `pipelines`."""
    current = state or DealState(deal_id=deal_id)
    for recorded in history:
        current = evolve(current, recorded, pipelines)
    return current


def pipelines_named(
    events: Iterable[Recorded], states: Iterable[DealState] = ()
) -> set[tuple[str, int]]:
    """The pipeline versions folding `events` onto `states` needs: what a caller loads into
    the catalog first."""
    wanted = {(s.pipeline_key, s.pipeline_version) for s in states if s.exists}
    for recorded in events:
        event = recorded.event
        if isinstance(event, DealOpened):
            wanted.add((event.pipeline, event.pipeline_version))
        elif isinstance(event, DealMigrated):
            wanted.add((event.pipeline, event.to_version))
    return wanted
