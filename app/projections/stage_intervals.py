"""The `stage_intervals` read model: every stay of a deal in a stage, and how it ended.

Times are when the stage change was recorded (the database clock), not when it was claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from app.domain import events as e
from app.domain.pipeline import NURTURE
from app.domain.state import Recorded
from app.projections.runner import Envelope


@dataclass(frozen=True)
class Interval:
    deal_id: UUID
    seq: int
    stage: str
    entered_at: datetime
    left_at: datetime | None = None
    left_how: str | None = None
    left_reason: str | None = None
    """The regression trigger or disqualification reason it left with."""
    left_override_by: str | None = None
    """Who overrode the exit criteria when it left forward (None: it left on evidence)."""
    owner: str = ""
    amount: Decimal | None = None
    """The deal's owner and amount while in the stage (the latest, if they changed)."""
    pipeline: str = "default"
    pipeline_version: int = 1
    """The pipeline version the deal was on in the stay (the latest, if it migrated)."""


_HOW = {
    "StageAdvanced": "advanced",
    "StageRegressed": "regressed",
    "DealReactivated": "reactivated",
    "DealNurtured": "nurtured",
    "DealWon": "won",
    "DealDisqualified": "disqualified",
    "DealMigrated": "migrated",
}


def next_intervals(deal_id: UUID, last: Interval | None, recorded: Recorded) -> list[Interval]:
    """Intervals changed or begun by one event: the one it closes, then the one it opens."""
    event, at = recorded.event, recorded.recorded_at
    seq = last.seq + 1 if last else 1
    match event:
        case e.DealOpened():
            return [
                Interval(
                    deal_id,
                    seq,
                    event.stage,
                    at,
                    owner=event.owner,
                    amount=event.amount,
                    pipeline=event.pipeline,
                    pipeline_version=event.pipeline_version,
                )
            ]
        case e.OwnerAssigned() if last is not None and last.left_at is None:
            return [replace(last, owner=event.owner)]
        case e.AmountChanged() if last is not None and last.left_at is None:
            return [replace(last, amount=event.amount)]
        case e.DealMigrated() if last is not None and last.left_at is None:
            if event.to_stage == last.stage:
                return [replace(last, pipeline_version=event.to_version)]
            closed = replace(last, left_at=at, left_how=_HOW[event.type])
            opened = replace(
                last,
                seq=seq,
                stage=event.to_stage,
                entered_at=at,
                pipeline_version=event.to_version,
                left_at=None,
                left_how=None,
                left_reason=None,
                left_override_by=None,
            )
            return [closed, opened]
        case e.StageAdvanced() | e.StageRegressed() | e.DealReactivated() | e.DealNurtured():
            if last is None:
                return []
            stage = NURTURE if isinstance(event, e.DealNurtured) else event.to_stage
            reason = event.trigger if isinstance(event, e.StageRegressed) else None
            override = event.override if isinstance(event, e.StageAdvanced) else None
            closed = replace(
                last,
                left_at=at,
                left_how=_HOW[event.type],
                left_reason=reason,
                left_override_by=override.by if override else None,
            )
            opened = Interval(
                deal_id,
                seq,
                stage,
                at,
                owner=last.owner,
                amount=last.amount,
                pipeline=last.pipeline,
                pipeline_version=getattr(event, "pipeline_version", last.pipeline_version),
            )
            return [closed, opened]
        case e.DealDisqualified() | e.DealWon():
            if last is None:
                return []
            reason = event.reason if isinstance(event, e.DealDisqualified) else None
            override = event.override if isinstance(event, e.DealWon) else None
            return [
                replace(
                    last,
                    left_at=at,
                    left_how=_HOW[event.type],
                    left_reason=reason,
                    left_override_by=override.by if override else None,
                )
            ]
        case _:
            return []


_FIELDS = (
    "deal_id",
    "seq",
    "stage",
    "entered_at",
    "left_at",
    "left_how",
    "left_reason",
    "left_override_by",
    "owner",
    "amount",
    "pipeline",
    "pipeline_version",
)
_UPSERT = f"""
INSERT INTO stage_intervals ({", ".join(_FIELDS)})
SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[],
                     $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[],
                     $10::numeric[], $11::text[], $12::int[])
ON CONFLICT (deal_id, seq) DO UPDATE SET
    left_at = excluded.left_at, left_how = excluded.left_how,
    left_reason = excluded.left_reason, left_override_by = excluded.left_override_by,
    owner = excluded.owner, amount = excluded.amount,
    pipeline_version = excluded.pipeline_version
"""
_SELECT = f"SELECT {', '.join(_FIELDS)} FROM stage_intervals"


class StageIntervalsProjection:
    name: str = "stage_intervals"
    tables: tuple[str, ...] = ("stage_intervals",)

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        ids = list(dict.fromkeys(envelope.stream_id for envelope in batch))
        rows = await connection.fetch(
            f"SELECT DISTINCT ON (deal_id) {', '.join(_FIELDS)} FROM stage_intervals"
            " WHERE deal_id = ANY($1::uuid[]) ORDER BY deal_id, seq DESC",
            ids,
        )
        latest: dict[UUID, Interval] = {r["deal_id"]: Interval(**dict(r)) for r in rows}
        changed: dict[tuple[UUID, int], Interval] = {}
        for envelope in batch:
            for interval in next_intervals(
                envelope.stream_id, latest.get(envelope.stream_id), envelope.recorded
            ):
                changed[(interval.deal_id, interval.seq)] = interval
                latest[interval.deal_id] = interval
        if not changed:
            return
        columns: list[list[Any]] = [[] for _ in _FIELDS]
        for interval in changed.values():
            for column, name in zip(columns, _FIELDS, strict=True):
                column.append(getattr(interval, name))
        await connection.execute(_UPSERT, *columns)


async def intervals_of(connection: asyncpg.Connection, deal_id: UUID) -> list[Interval]:
    rows = await connection.fetch(f"{_SELECT} WHERE deal_id = $1 ORDER BY seq", deal_id)
    return [Interval(**dict(r)) for r in rows]
