"""The `stage_intervals` read model: every stay of a deal in a stage, and how it ended.

Times are when the stage change was recorded (the database clock), not when it was claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.domain.pipeline import NURTURE
from app.domain.state import Recorded
from app.events import schemas as e
from app.projections.runner import Envelope


@dataclass(frozen=True)
class Interval:
    deal_id: UUID
    seq: int
    stage: str
    entered_at: datetime
    left_at: datetime | None = None
    left_how: str | None = None


def next_intervals(deal_id: UUID, last: Interval | None, recorded: Recorded) -> list[Interval]:
    """Intervals changed or begun by one event: the one it closes, then the one it opens."""
    event, at = recorded.event, recorded.recorded_at
    seq = last.seq + 1 if last else 1
    match event:
        case e.DealOpened():
            return [Interval(deal_id, seq, event.stage, at)]
        case e.StageAdvanced() | e.StageRegressed() | e.DealReactivated() | e.DealNurtured():
            how = {
                "StageAdvanced": "advanced",
                "StageRegressed": "regressed",
                "DealReactivated": "reactivated",
                "DealNurtured": "nurtured",
            }[event.type]
            stage = NURTURE if isinstance(event, e.DealNurtured) else event.to_stage
            closed = [replace(last, left_at=at, left_how=how)] if last else []
            return [*closed, Interval(deal_id, seq, stage, at)]
        case e.DealDisqualified() | e.DealWon():
            how = "won" if isinstance(event, e.DealWon) else "disqualified"
            return [replace(last, left_at=at, left_how=how)] if last else []
        case _:
            return []


_UPSERT = """
INSERT INTO stage_intervals (deal_id, seq, stage, entered_at, left_at, left_how)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[],
                     $5::timestamptz[], $6::text[])
ON CONFLICT (deal_id, seq) DO UPDATE SET left_at = excluded.left_at, left_how = excluded.left_how
"""


class StageIntervalsProjection:
    name: str = "stage_intervals"
    tables: tuple[str, ...] = ("stage_intervals",)

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        ids = list(dict.fromkeys(envelope.stream_id for envelope in batch))
        rows = await connection.fetch(
            "SELECT DISTINCT ON (deal_id) deal_id, seq, stage, entered_at, left_at, left_how"
            " FROM stage_intervals WHERE deal_id = ANY($1::uuid[]) ORDER BY deal_id, seq DESC",
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
        columns: list[list[Any]] = [[] for _ in range(6)]
        for i in changed.values():
            for column, value in zip(
                columns,
                (i.deal_id, i.seq, i.stage, i.entered_at, i.left_at, i.left_how),
                strict=True,
            ):
                column.append(value)
        await connection.execute(_UPSERT, *columns)


async def intervals_of(connection: asyncpg.Connection, deal_id: UUID) -> list[Interval]:
    rows = await connection.fetch(
        "SELECT deal_id, seq, stage, entered_at, left_at, left_how FROM stage_intervals"
        " WHERE deal_id = $1 ORDER BY seq",
        deal_id,
    )
    return [Interval(**dict(r)) for r in rows]
