"""Commands: what someone asks a deal to do (imperative names; ids and time come in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from app.domain.events import EvidenceSource, ExternalRef


@dataclass(frozen=True)
class OpenDeal:
    name: str
    owner: str
    account: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    close_date: date | None = None
    pipeline: str = "default"
    external_ref: ExternalRef | None = None


@dataclass(frozen=True)
class RecordBuyerActivity:
    activity_type: str
    occurred_at: datetime
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordEvidence:
    evidence_id: UUID
    kind: str
    criteria: tuple[str, ...]
    summary: str
    occurred_at: datetime
    source: EvidenceSource | None = None


@dataclass(frozen=True)
class RetractEvidence:
    evidence_id: UUID
    reason: str


@dataclass(frozen=True)
class AdvanceStage:
    to_stage: str
    note: str | None = None
    override_reason: str | None = None


@dataclass(frozen=True)
class RegressStage:
    to_stage: str
    trigger: str
    note: str | None = None


@dataclass(frozen=True)
class NurtureDeal:
    reason: str
    resume_on: date


@dataclass(frozen=True)
class ReactivateDeal:
    to_stage: str | None = None


@dataclass(frozen=True)
class DisqualifyDeal:
    reason: str
    note: str | None = None


@dataclass(frozen=True)
class WinDeal:
    note: str | None = None
    override_reason: str | None = None


@dataclass(frozen=True)
class MigrateDeal:
    """Move the deal to another version of its pipeline (None: the latest); `stage_mapping`
    says where a stage the new version lacks (or renames) goes."""

    reason: str
    to_version: int | None = None
    stage_mapping: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RaiseBlocker:
    blocker_id: UUID
    category: str
    description: str


@dataclass(frozen=True)
class ResolveBlocker:
    blocker_id: UUID
    resolution: str


@dataclass(frozen=True)
class SetNextStep:
    description: str
    due_date: date


@dataclass(frozen=True)
class CompleteNextStep:
    pass


@dataclass(frozen=True)
class AddStakeholder:
    stakeholder_id: UUID
    name: str
    role: str
    title: str | None = None


@dataclass(frozen=True)
class ChangeStakeholder:
    stakeholder_id: UUID
    role: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class StakeholderLeaves:
    stakeholder_id: UUID


_UNSET: Any = object()


@dataclass(frozen=True)
class ChangeDeal:
    """Fields left at UNSET are not changed; None clears the field."""

    amount: Decimal | None = _UNSET
    currency: str | None = _UNSET
    close_date: date | None = _UNSET
    owner: str = _UNSET


UNSET = _UNSET

Command = (
    OpenDeal
    | RecordBuyerActivity
    | RecordEvidence
    | RetractEvidence
    | AdvanceStage
    | RegressStage
    | NurtureDeal
    | ReactivateDeal
    | DisqualifyDeal
    | WinDeal
    | MigrateDeal
    | RaiseBlocker
    | ResolveBlocker
    | SetNextStep
    | CompleteNextStep
    | AddStakeholder
    | ChangeStakeholder
    | StakeholderLeaves
    | ChangeDeal
)
