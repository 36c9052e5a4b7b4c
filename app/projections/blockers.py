"""The `blocker_log` read model: every blocker, when it was raised and resolved (recorded)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from app.domain import events as e
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
