"""What pipeline health and the inspections read: open deals' facts from the `deals` read
model, and closed-deal history from `stage_intervals` (both up to a time)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from app.domain.periods import Period
from app.domain.pipeline_facts import DealFacts, History

# The fields facts_of() takes from a DealState, read from the deals read model's columns
# (deal_row fills them) instead of parsing each deal's whole state: this runs over every
# open deal.
_FACTS = """
SELECT deal_id, name, owner, stage, pipeline_key, pipeline_version, amount, close_date,
       opened_at, stage_entered_at, last_buyer_activity_at, last_evidence_at, has_next_step
FROM deals
WHERE status = 'open' AND ($1::text IS NULL OR owner = $1)
  AND ($2::text IS NULL OR pipeline_key = $2)
ORDER BY opened_position
"""


async def open_facts(
    connection: asyncpg.Connection, owner: str | None, pipeline: str | None
) -> list[DealFacts]:
    """Every open deal's health facts as the read model has them now."""
    rows = await connection.fetch(_FACTS, owner, pipeline)
    return [DealFacts(*r) for r in rows]  # the columns in DealFacts' field order


async def created_value(
    connection: asyncpg.Connection,
    since: datetime,
    until: datetime,
    owner: str | None,
    pipeline: str | None,
) -> Decimal:
    """The current amounts of the deals opened in (since, until], whatever their status."""
    value = await connection.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM deals"
        " WHERE opened_at > $1 AND opened_at <= $2"
        " AND ($3::text IS NULL OR owner = $3)"
        " AND ($4::text IS NULL OR pipeline_key = $4)",
        since,
        until,
        owner,
        pipeline,
    )
    return Decimal(value)


async def closed_history(
    connection: asyncpg.Connection,
    as_of: datetime,
    owner: str | None,
    pipeline: str | None,
    early_stages: list[str],
    period: Period,
) -> History:
    """Deals closed by `as_of`: won and all; of those that were in an early stage, won and
    all; and the amount won in `period` up to `as_of` (owner and pipeline while closing)."""
    row = await connection.fetchrow(
        "WITH closed AS (SELECT deal_id, left_how, left_at, amount FROM stage_intervals"
        "   WHERE left_how IN ('won', 'disqualified') AND left_at <= $1"
        "   AND ($2::text IS NULL OR owner = $2) AND ($3::text IS NULL OR pipeline = $3)),"
        " early AS (SELECT DISTINCT deal_id FROM stage_intervals"
        "   WHERE stage = ANY($4::text[]) AND entered_at <= $1)"
        " SELECT count(*) FILTER (WHERE left_how = 'won') AS won, count(*) AS closed,"
        " count(*) FILTER (WHERE left_how = 'won' AND early.deal_id IS NOT NULL) AS early_won,"
        " count(*) FILTER (WHERE early.deal_id IS NOT NULL) AS early_closed,"
        " coalesce(sum(amount) FILTER (WHERE left_how = 'won' AND left_at >= $5"
        "   AND left_at < $6), 0) AS won_in_period"
        " FROM closed LEFT JOIN early USING (deal_id)",
        as_of,
        owner,
        pipeline,
        early_stages,
        period.start,
        period.end,
    )
    return History(
        early_won=row["early_won"],
        early_closed=row["early_closed"],
        won=row["won"],
        closed=row["closed"],
        won_in_period=Decimal(row["won_in_period"]),
    )
