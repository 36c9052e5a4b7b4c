"""The `sales_targets` table: what each owner should win per period, as managers set it.

Not a projection (targets are settings, like API keys): each PUT appends a row, so the
target standing at any past time is the latest row set by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg


@dataclass(frozen=True)
class Target:
    owner: str
    period: str
    amount: Decimal
    currency: str | None
    set_at: datetime
    set_by: str


async def set_target(
    connection: asyncpg.Connection,
    owner: str,
    period: str,
    amount: Decimal,
    currency: str | None,
    set_by: str,
) -> Target:
    row = await connection.fetchrow(
        "INSERT INTO sales_targets (owner, period, amount, currency, set_by)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING owner, period, amount, currency, set_at, set_by",
        owner,
        period,
        amount,
        currency,
        set_by,
    )
    return Target(**dict(row))


async def targets_for(
    connection: asyncpg.Connection, period: str, owner: str | None, as_of: datetime | None
) -> list[Target]:
    """Each owner's target for `period` as it stood at `as_of` (now: None), or `owner`'s."""
    rows = await connection.fetch(
        "SELECT DISTINCT ON (owner) owner, period, amount, currency, set_at, set_by"
        " FROM sales_targets WHERE period = $1 AND ($2::text IS NULL OR owner = $2)"
        " AND ($3::timestamptz IS NULL OR set_at <= $3) ORDER BY owner, set_at DESC",
        period,
        owner,
        as_of,
    )
    return [Target(**dict(r)) for r in rows]
