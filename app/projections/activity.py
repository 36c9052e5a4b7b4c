"""The `deal_activity` read model: last buyer activity, last activity of any kind, counts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.domain import events as e
from app.projections.runner import Envelope


@dataclass
class Activity:
    last_activity_at: datetime
    last_buyer_activity_at: datetime | None = None
    buyer_activity_count: int = 0
    counts_by_type: dict[str, int] = field(default_factory=dict)

    def add(self, occurred: datetime, event: e.DomainEvent) -> None:
        self.last_activity_at = max(self.last_activity_at, occurred)
        if isinstance(event, e.BuyerActivityRecorded):
            self.buyer_activity_count += 1
            kind = event.activity_type
            self.counts_by_type[kind] = self.counts_by_type.get(kind, 0) + 1
            if self.last_buyer_activity_at is None or occurred > self.last_buyer_activity_at:
                self.last_buyer_activity_at = occurred


def activity_row(deal_id: UUID, a: Activity) -> tuple[Any, ...]:
    return (
        deal_id,
        a.last_buyer_activity_at,
        a.last_activity_at,
        a.buyer_activity_count,
        json.dumps(a.counts_by_type, sort_keys=True),
    )


COLUMNS = (
    "deal_id",
    "last_buyer_activity_at",
    "last_activity_at",
    "buyer_activity_count",
    "counts_by_type",
)
_UPSERT = """
INSERT INTO deal_activity (deal_id, last_buyer_activity_at, last_activity_at,
                           buyer_activity_count, counts_by_type)
SELECT deal_id, last_buyer, last_any, n, counts::jsonb
FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::text[])
     AS row(deal_id, last_buyer, last_any, n, counts)
ON CONFLICT (deal_id) DO UPDATE SET
    last_buyer_activity_at = excluded.last_buyer_activity_at,
    last_activity_at = excluded.last_activity_at,
    buyer_activity_count = excluded.buyer_activity_count,
    counts_by_type = excluded.counts_by_type
"""


class ActivityProjection:
    name: str = "activity"
    tables: tuple[str, ...] = ("deal_activity",)

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        ids = list(dict.fromkeys(envelope.stream_id for envelope in batch))
        rows = await connection.fetch(
            "SELECT deal_id, last_buyer_activity_at, last_activity_at, buyer_activity_count,"
            " counts_by_type::text AS counts FROM deal_activity WHERE deal_id = ANY($1::uuid[])",
            ids,
        )
        activity = {
            r["deal_id"]: Activity(
                r["last_activity_at"],
                r["last_buyer_activity_at"],
                r["buyer_activity_count"],
                json.loads(r["counts"]),
            )
            for r in rows
        }
        for envelope in batch:
            current = activity.get(envelope.stream_id)
            if current is None:
                current = activity[envelope.stream_id] = Activity(envelope.stored.occurred_at)
            current.add(envelope.stored.occurred_at, envelope.recorded.event)
        columns: list[list[Any]] = [[] for _ in range(5)]
        for deal_id in ids:
            for column, value in zip(
                columns, activity_row(deal_id, activity[deal_id]), strict=True
            ):
                column.append(value)
        await connection.execute(_UPSERT, *columns)
