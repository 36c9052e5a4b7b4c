"""The `blocker_log` read model: every blocker, when it was raised and resolved (recorded);
and the analytics per blocker category."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.domain import events as e
from app.projections.analytics import Filters
from app.projections.runner import Envelope

_UPSERT = """
INSERT INTO blocker_log (blocker_id, deal_id, category, raised_at, resolved_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[],
                     $5::timestamptz[])
ON CONFLICT (blocker_id) DO UPDATE SET resolved_at = excluded.resolved_at
"""


class BlockersProjection:
    name: str = "blockers"
    tables: tuple[str, ...] = ("blocker_log",)

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        rows: dict[UUID, list[Any]] = {}
        resolved: dict[UUID, datetime] = {}
        for envelope in batch:
            event = envelope.recorded.event
            at = envelope.recorded.recorded_at
            if isinstance(event, e.BlockerRaised):
                rows[event.blocker_id] = [
                    event.blocker_id,
                    envelope.stream_id,
                    event.category,
                    at,
                    None,
                ]
            elif isinstance(event, e.BlockerResolved):
                if event.blocker_id in rows:
                    rows[event.blocker_id][4] = at
                else:
                    resolved[event.blocker_id] = at
        if resolved:
            await connection.execute(
                "UPDATE blocker_log SET resolved_at = r.at FROM unnest($1::uuid[],"
                " $2::timestamptz[]) AS r(id, at) WHERE blocker_id = r.id",
                list(resolved),
                list(resolved.values()),
            )
        if rows:
            columns = [list(column) for column in zip(*rows.values(), strict=True)]
            await connection.execute(_UPSERT, *columns)


@dataclass(frozen=True)
class BlockerCategory:
    category: str
    open: int
    resolved: int
    median_days_to_resolve: float | None


async def blocker_categories(connection: asyncpg.Connection, f: Filters) -> list[BlockerCategory]:
    """Blockers raised in the window, per category: open, resolved, median days to resolve
    (by the deal's current owner, pipeline, pipeline version and size band)."""
    rows = await connection.fetch(
        "SELECT b.category, count(*) FILTER (WHERE b.resolved_at IS NULL) AS open,"
        " count(*) FILTER (WHERE b.resolved_at IS NOT NULL) AS resolved,"
        " percentile_cont(0.5) WITHIN GROUP"
        "  (ORDER BY extract(epoch FROM b.resolved_at - b.raised_at) / 86400.0) AS median"
        " FROM blocker_log b JOIN deals d USING (deal_id)"
        " WHERE ($1::text IS NULL OR d.owner = $1)"
        " AND ($2::text IS NULL OR d.pipeline_key = $2)"
        " AND ($3::timestamptz IS NULL OR b.raised_at >= $3)"
        " AND ($4::timestamptz IS NULL OR b.raised_at < $4)"
        f" AND ($5::text IS NULL OR {f.band_sql} = $5)"
        " AND ($6::int IS NULL OR d.pipeline_version = $6)"
        " GROUP BY b.category ORDER BY b.category",
        f.owner,
        f.pipeline,
        f.start,
        f.end,
        f.size_band,
        f.pipeline_version,
    )
    return [
        BlockerCategory(
            category=r["category"],
            open=r["open"],
            resolved=r["resolved"],
            median_days_to_resolve=None if r["median"] is None else round(float(r["median"]), 4),
        )
        for r in rows
    ]
