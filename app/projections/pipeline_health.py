"""What pipeline health and the inspections read: open deals' facts from the `deals` read
model, and closed-deal history from `stage_intervals` (both up to a time)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from app.domain.periods import Period
from app.domain.pipeline_facts import DealFacts, History
from app.domain.pipeline_health import (
    Found,
    HealthFigures,
    HealthRules,
    StageFigures,
    StageLimit,
)

_FACTS = (
    "deal_id",
    "stage",
    "pipeline_key",
    "pipeline_version",
    "amount",
    "close_date",
    "opened_at",
    "stage_entered_at",
    "last_buyer_activity_at",
    "last_evidence_at",
    "has_next_step",
)
# The open deals, from the read model's columns (deal_row fills them; no state is parsed) or
# given as arrays (facts of deals replayed to a past time): one query judges both alike.
_OPEN_NOW = """
SELECT deal_id, stage, pipeline_key, pipeline_version, amount, close_date, opened_at,
  coalesce(stage_entered_at, opened_at) AS stage_entered_at, last_buyer_activity_at,
  last_evidence_at, has_next_step FROM deals
WHERE status = 'open' AND ($16::text IS NULL OR owner = $16)
  AND ($17::text IS NULL OR pipeline_key = $17)
"""
_GIVEN = f"""
SELECT * FROM unnest($16::uuid[], $17::text[], $18::text[], $19::int[], $20::numeric[],
  $21::date[], $22::timestamptz[], $23::timestamptz[], $24::timestamptz[], $25::timestamptz[],
  $26::bool[]) AS f({", ".join(_FACTS)})
"""
# Sums come as text: asyncpg reads numeric 80000 as Decimal('8E+4').
# One pass over the open deals, summed per stage and version (`v`); the stages and the whole
# are summed from those few rows. Each rule's threshold comes as the time a deal must have
# entered (been touched) by, compared exactly. No list sorts every open deal: a stage's lists
# (most overdue first, at most $2 ids) and the two ages its p90 lies between are read in the
# order deals entered it (the deals_open_stage_entered index, for the read model), the early
# and in-period lists take each stage's highest amounts (deals_open_value) and keep the
# highest of those, and the stale and dead lists are only read when some deal is.
# $1: as_of; $3-$11: the stage limits; $12/$13: untouched since, stale and dead; $14/$15:
# the period's days.
_FIGURES = """
WITH f AS {materialized} ({facts}), s AS (
  SELECT * FROM unnest($3::text[], $4::int[], $5::text[], $6::numeric[], $7::int[],
    $8::timestamptz[], $9::timestamptz[], $10::float8[], $11::bool[])
    AS s(pipeline_key, pipeline_version, stage, probability, expected_days, aging_from,
         long_from, long_ratio, early)
), d AS NOT MATERIALIZED (
  SELECT f.deal_id, f.stage, f.pipeline_key, f.pipeline_version,
    coalesce(f.amount, 0) AS value, coalesce(f.amount, 0) * coalesce(s.probability, 0) AS weighted,
    {age} AS age,
    s.expected_days, s.long_ratio, coalesce(s.early, false) AS early,
    f.stage_entered_at <= s.aging_from AS aging, f.stage_entered_at <= s.long_from AS long,
    coalesce(greatest(f.last_buyer_activity_at, f.last_evidence_at), f.opened_at) AS touched,
    coalesce(f.last_buyer_activity_at, f.opened_at) AS buyer_touched,
    coalesce(greatest(f.last_buyer_activity_at, f.last_evidence_at), f.opened_at) <= $12
      AS stale,
    NOT f.has_next_step AND coalesce(f.last_buyer_activity_at, f.opened_at) <= $13 AS dead,
    f.close_date >= $14 AND f.close_date < $15 AS in_period, s.stage IS NOT NULL AS limited
  FROM f LEFT JOIN s USING (pipeline_key, pipeline_version, stage)
  WHERE f.opened_at <= $1
), v AS MATERIALIZED (
  SELECT stage, pipeline_key, pipeline_version, count(*) AS deals, sum(value) AS value,
    sum(weighted) AS weighted, sum(age) AS ages, max(expected_days) AS expected_days,
    count(*) FILTER (WHERE aging) AS aging, count(*) FILTER (WHERE long) AS long,
    max(age) FILTER (WHERE long) AS longest, max(long_ratio) FILTER (WHERE long) AS long_ratio,
    max(expected_days) FILTER (WHERE long) AS long_expected_days,
    count(*) FILTER (WHERE stale) AS stale, count(*) FILTER (WHERE dead) AS dead,
    sum(value) FILTER (WHERE early) AS early_value, count(*) FILTER (WHERE early) AS early,
    sum(weighted) FILTER (WHERE in_period) AS period_weighted,
    count(*) FILTER (WHERE in_period) AS in_period,
    count(*) FILTER (WHERE in_period AND NOT limited) AS unlimited_in_period
  FROM d GROUP BY stage, pipeline_key, pipeline_version
), g AS (
  SELECT stage, sum(deals)::bigint AS deals, sum(value) AS value, sum(weighted) AS weighted,
    sum(ages) / sum(deals) AS mean_age, max(expected_days) AS expected_days,
    sum(aging)::bigint AS aging, sum(long)::bigint AS long, max(longest) AS longest,
    max(long_ratio) AS long_ratio, max(long_expected_days) AS long_expected_days
  FROM v GROUP BY stage
)
SELECT 'stage' AS level, stage, NULL AS pipeline_key, NULL::int AS pipeline_version,
  deals, value::text AS value, weighted::text AS weighted, mean_age,
  ARRAY({ages} OFFSET (deals - 1 - ceil(0.9::float8 * (deals - 1)))::bigint LIMIT 2)
    AS p90_edges,
  expected_days,
  ARRAY({ids} LIMIT $2) AS ids,
  aging, ARRAY({aging_ids} LIMIT $2) AS aging_ids,
  long, ARRAY({long_ids} LIMIT $2) AS long_ids,
  longest, long_ratio, long_expected_days,
  NULL::bigint AS stale, NULL::uuid[] AS stale_ids, NULL::bigint AS dead, NULL::uuid[] AS dead_ids,
  NULL AS early_value, NULL::bigint AS early, NULL::uuid[] AS early_ids,
  NULL AS period_weighted, NULL::bigint AS in_period, NULL::uuid[] AS in_period_ids
FROM g
UNION ALL
SELECT 'version', NULL, pipeline_key, pipeline_version, sum(deals)::bigint,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM v GROUP BY pipeline_key, pipeline_version
UNION ALL
SELECT 'all', NULL, NULL, NULL, coalesce(sum(deals), 0)::bigint, coalesce(sum(value), 0)::text,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  coalesce(sum(stale), 0)::bigint, CASE WHEN sum(stale) > 0 THEN
    ARRAY(SELECT deal_id FROM d WHERE stale ORDER BY touched, deal_id LIMIT $2) END,
  coalesce(sum(dead), 0)::bigint, CASE WHEN sum(dead) > 0 THEN
    ARRAY(SELECT deal_id FROM d WHERE dead ORDER BY buyer_touched, deal_id LIMIT $2) END,
  coalesce(sum(early_value), 0)::text, coalesce(sum(early), 0)::bigint,
  CASE WHEN sum(early) > 0 THEN {early_ids} END,
  coalesce(sum(period_weighted), 0)::text, coalesce(sum(in_period), 0)::bigint,
  CASE WHEN sum(unlimited_in_period) > 0 THEN
    ARRAY(SELECT deal_id FROM d WHERE in_period ORDER BY weighted DESC, deal_id LIMIT $2)
  WHEN sum(in_period) > 0 THEN {period_ids} END
FROM v
"""
_AGE = "(date_part('epoch', $1::timestamptz) - date_part('epoch', f.stage_entered_at)) / 86400"
# A stage's deals in the order they entered it (`g` names the stage).
_STAYERS = """SELECT {what} FROM f WHERE f.stage = g.stage AND f.opened_at <= $1{extra}
    ORDER BY f.stage_entered_at, f.deal_id"""
# Those past a threshold of their own version's: the highest of the stage's bounds the scan.
_OVER = """
    AND f.stage_entered_at <= (SELECT max({limit}) FROM s WHERE s.stage = g.stage)
    AND EXISTS (SELECT FROM s WHERE (s.pipeline_key, s.pipeline_version, s.stage)
      = (f.pipeline_key, f.pipeline_version, f.stage) AND f.stage_entered_at <= s.{limit})"""
# The highest `by` (with deal_id, the lower first on a tie) of the deals a stage's highest
# amounts are: a stage's probability is above 0 (the pipeline model holds it so), so within
# a stage the weighted value orders as the amount does. A deal in a stage no limit names
# (none early, its weighted value 0) is only listed by a sort of every deal in the period.
_HIGHEST = """ARRAY(SELECT t.deal_id FROM s, LATERAL (
      SELECT f.deal_id, coalesce(f.amount, 0){times} AS by FROM f
      WHERE (f.pipeline_key, f.pipeline_version, f.stage)
        = (s.pipeline_key, s.pipeline_version, s.stage) AND f.opened_at <= $1{extra}
      ORDER BY coalesce(f.amount, 0) DESC, f.deal_id LIMIT $2) t
    WHERE {which} ORDER BY t.by DESC, t.deal_id LIMIT $2)"""


def _figures_query(facts: str, materialized: bool) -> str:
    def stayers(what: str, limit: str | None = None) -> str:
        return _STAYERS.format(what=what, extra=_OVER.format(limit=limit) if limit else "")

    return _FIGURES.format(
        materialized="MATERIALIZED" if materialized else "NOT MATERIALIZED",
        facts=facts,
        age=_AGE,
        ages=stayers(_AGE),
        ids=stayers("f.deal_id"),
        aging_ids=stayers("f.deal_id", "aging_from"),
        long_ids=stayers("f.deal_id", "long_from"),
        early_ids=_HIGHEST.format(times="", extra="", which="s.early"),
        period_ids=_HIGHEST.format(
            times=" * s.probability",
            extra=" AND f.close_date >= $14 AND f.close_date < $15",
            which="true",
        ),
    )


# The read model's open deals are read where they lie (the index serves the stage lists);
# facts given as arrays are unnested once.
_FIGURES_NOW = _figures_query(_OPEN_NOW, materialized=False)
_FIGURES_GIVEN = _figures_query(_GIVEN, materialized=True)


def _p90(deals: int, edges: Sequence[float]) -> float:
    """The 90th percentile of a stage's ages, interpolated as percentile_cont does, from the
    ages at its two nearest ranks (`edges`: the older deal's first)."""
    at = 0.9 * (deals - 1)
    low = math.floor(at)
    if len(edges) == 1 or low == math.ceil(at):
        return edges[0]
    return edges[1] + (at - low) * (edges[0] - edges[1])


def _found(row: asyncpg.Record, name: str) -> Found:
    return Found(row[name], tuple(row[f"{name}_ids"] or ()))


async def health_figures(
    connection: asyncpg.Connection,
    as_of: datetime,
    limits: Sequence[StageLimit],
    rules: HealthRules,
    period: Period,
    listed: int,
    *,
    owner: str | None = None,
    pipeline: str | None = None,
    given: Sequence[DealFacts] | None = None,
) -> HealthFigures:
    """Sums over the open deals (the read model's, or `given`) opened by `as_of`, with at
    most `listed` deal ids for each thing a rule counts."""
    stage_args = [
        [getattr(limit, name) for limit in limits]
        for name in ("pipeline_key", "pipeline_version", "stage", "probability")
    ]
    stage_args += [
        [limit.expected.days for limit in limits],
        # Each threshold as the time a deal must have entered (been touched) by: compared
        # as timestamps, exact at the threshold and cheap per row.
        [as_of - limit.expected for limit in limits],
        [as_of - limit.long_after if limit.long_after else None for limit in limits],
        [limit.long_ratio for limit in limits],
        [limit.early for limit in limits],
    ]
    facts_args: list[Any]
    if given is None:
        query, facts_args = _FIGURES_NOW, [owner, pipeline]
    else:
        query = _FIGURES_GIVEN
        facts_args = [[getattr(d, name) for d in given] for name in _FACTS]
    async with connection.transaction():
        # The summed rows and sorts of 100k open deals fit in 32 MB; the default 4 MB
        # spills them to disk (about 60 ms more there).
        await connection.execute("SET LOCAL work_mem = '32MB'")
        rows = await connection.fetch(
            query,
            as_of,
            listed,
            *stage_args,
            as_of - timedelta(days=rules.stale_days),
            as_of - timedelta(days=rules.dead_days),
            period.first_day,
            period.next_first_day,
            *facts_args,
        )
    total = next(r for r in rows if r["level"] == "all")
    return HealthFigures(
        as_of=as_of,
        deals=total["deals"],
        value=Decimal(total["value"]),
        stages=[
            StageFigures(
                stage=r["stage"],
                deals=Found(r["deals"], tuple(r["ids"])),
                value=Decimal(r["value"]),
                weighted=Decimal(r["weighted"]),
                mean_age_days=r["mean_age"],
                p90_age_days=_p90(r["deals"], r["p90_edges"]),
                expected_days=r["expected_days"],
                aging=_found(r, "aging"),
                long=_found(r, "long"),
                longest_days=r["longest"],
                long_ratio=r["long_ratio"],
                long_expected_days=r["long_expected_days"],
            )
            for r in sorted((r for r in rows if r["level"] == "stage"), key=lambda r: r["stage"])
        ],
        versions=sorted(
            (r["pipeline_key"], r["pipeline_version"]) for r in rows if r["level"] == "version"
        ),
        stale=_found(total, "stale"),
        dead=_found(total, "dead"),
        early_value=Decimal(total["early_value"]),
        early=_found(total, "early"),
        period_weighted=Decimal(total["period_weighted"]),
        in_period=_found(total, "in_period"),
    )


async def deal_facts(connection: asyncpg.Connection, ids: Sequence[UUID]) -> list[DealFacts]:
    """The read model's facts of the deals `ids`, in that order."""
    rows = await connection.fetch(
        "SELECT deal_id, name, owner, stage, pipeline_key, pipeline_version, amount,"
        " close_date, opened_at, stage_entered_at, last_buyer_activity_at, last_evidence_at,"
        " has_next_step FROM deals WHERE deal_id = ANY($1::uuid[])",
        list(ids),
    )
    by_id = {r["deal_id"]: DealFacts(*r) for r in rows}  # the columns in field order
    return [by_id[i] for i in ids if i in by_id]


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
        # Each closed deal looks up its own early intervals by the primary key rather than
        # every early interval of every deal being collected first. The test is wrapped in
        # IS TRUE so no plan probes the stage index per deal instead (what the planner chose
        # on tables not analyzed yet, as after a rebuild: 0.8 s for 1,500 closed deals).
        "SELECT count(*) FILTER (WHERE left_how = 'won') AS won, count(*) AS closed,"
        " count(*) FILTER (WHERE left_how = 'won' AND early) AS early_won,"
        " count(*) FILTER (WHERE early) AS early_closed,"
        " coalesce(sum(amount) FILTER (WHERE left_how = 'won' AND left_at >= $5"
        "   AND left_at < $6), 0) AS won_in_period"
        " FROM (SELECT c.left_how, c.left_at, c.amount, EXISTS (SELECT FROM stage_intervals e"
        "   WHERE e.deal_id = c.deal_id"
        "   AND (e.stage = ANY($4::text[]) AND e.entered_at <= $1) IS TRUE)"
        "   AS early FROM stage_intervals c"
        "   WHERE c.left_how IN ('won', 'disqualified') AND c.left_at <= $1"
        "   AND ($2::text IS NULL OR c.owner = $2) AND ($3::text IS NULL OR c.pipeline = $3)) x",
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
