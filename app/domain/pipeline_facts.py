"""What the pipeline health rules judge: each open deal's facts (from its state, or read
straight from the deals read model) and figures from the deals already closed. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from app.domain.pipeline import ACTIVE
from app.domain.state import DealState


@dataclass(frozen=True)
class DealFacts:
    """What the health rules need of one open deal."""

    deal_id: UUID
    name: str
    owner: str
    stage: str
    pipeline_key: str
    pipeline_version: int
    amount: Decimal | None
    close_date: date | None
    opened_at: datetime
    stage_entered_at: datetime
    last_buyer_activity_at: datetime | None
    last_evidence_at: datetime | None
    has_next_step: bool

    @property
    def value(self) -> Decimal:
        return self.amount or Decimal(0)


def facts_of(state: DealState) -> DealFacts:
    """The health facts of a deal (open or not) as its state holds them."""
    evidence = [item.occurred_at for item in state.evidence.values()]
    opened = state.opened_at or state.stage_entered_at
    assert opened is not None, "a deal that exists was opened"
    return DealFacts(
        deal_id=state.deal_id,
        name=state.name,
        owner=state.owner,
        stage=state.stage,
        pipeline_key=state.pipeline_key,
        pipeline_version=state.pipeline_version,
        amount=state.amount,
        close_date=state.close_date,
        opened_at=opened,
        stage_entered_at=state.stage_entered_at or opened,
        last_buyer_activity_at=state.last_buyer_activity_at,
        last_evidence_at=max(evidence, default=None),
        has_next_step=state.next_step is not None,
    )


@dataclass(frozen=True)
class History:
    """Figures from closed deals and the period, computed by the caller up to `as_of`."""

    early_won: int = 0
    early_closed: int = 0
    """Of the deals that were in an early stage and have since closed, won and all closed."""
    won: int = 0
    closed: int = 0
    won_in_period: Decimal = Decimal(0)
    created_value: Decimal = Decimal(0)
    """The value of deals opened in the trailing creation window."""
    target: Decimal | None = None

    @property
    def early_conversion(self) -> float | None:
        return self.early_won / self.early_closed if self.early_closed else None

    @property
    def win_rate(self) -> float | None:
        return self.won / self.closed if self.closed else None


def is_open(state: DealState) -> bool:
    return state.exists and state.status == ACTIVE
