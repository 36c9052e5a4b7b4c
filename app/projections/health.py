"""How the projections stand: each one's checkpoint, lag and stop (a poison event), and the
oldest open transaction in the database (gap-safe readers wait for it). For /readyz,
/metrics and `dealledger projections status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.projections.runner import failures

# Counting stops here: /readyz and /metrics are polled often, and counting a million rows per
# projection on every probe would cost more than the news is worth.
LAG_CAP = 10_000


@dataclass(frozen=True)
class ProjectionState:
    name: str
    position: int
    lag: int
    """Committed events not applied yet (at most LAG_CAP)."""
    lag_seconds: float = 0.0
    """How long the oldest event not applied yet has been in the log (0: none)."""
    stopped_at: int | None = None
    stopped_by: str | None = None
    """The event type and error that stopped it."""
    stopped_since: datetime | None = None


@dataclass(frozen=True)
class Health:
    projections: list[ProjectionState]
    oldest_transaction_seconds: float | None
    """Age of the oldest open transaction this role can see: gap-safe reads wait for it."""

    @property
    def stopped(self) -> list[ProjectionState]:
        return [p for p in self.projections if p.stopped_at is not None]


async def health(connection: asyncpg.Connection, names: list[str]) -> Health:
    stops = {row["projection"]: row for row in await failures(connection)}
    states = []
    for name in dict.fromkeys([*names, *stops]):  # a stop of any name is news
        row = await connection.fetchrow(
            "SELECT transaction_id, position FROM projection_checkpoints WHERE name = $1", name
        )
        txid, position = (row["transaction_id"], row["position"]) if row else ("0", 0)
        lag = await connection.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM events"
            " WHERE (transaction_id, position) > ($1::text::xid8, $2) LIMIT $3) AS behind",
            str(txid),
            position,
            LAG_CAP,
        )
        waited = await connection.fetchval(
            "SELECT extract(epoch FROM now() - recorded_at) FROM events"
            " WHERE (transaction_id, position) > ($1::text::xid8, $2)"
            " ORDER BY transaction_id, position LIMIT 1",
            str(txid),
            position,
        )
        stop = stops.get(name)
        states.append(
            ProjectionState(
                name,
                position,
                int(lag),
                max(float(waited or 0), 0.0),
                stop["position"] if stop else None,
                f"{stop['event_type']}: {stop['error']}" if stop else None,
                stop["failed_at"] if stop else None,
            )
        )
    oldest = await connection.fetchval(
        "SELECT extract(epoch FROM now() - min(xact_start)) FROM pg_stat_activity"
        " WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()"
    )
    return Health(states, float(oldest) if oldest is not None else None)
