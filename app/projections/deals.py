"""The `deals` read model: each deal's current state, for GET and the filtered list."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import TypeAdapter

from app.domain.state import DealState, evolve, pipelines_named
from app.events.pipelines import PipelineVersions, reader_on
from app.projections.runner import Envelope

STATE = TypeAdapter(DealState)

# One statement: the deal's columns into `deals`, its state into `deal_states` (reports
# scan `deals`; only GET and this projection read the states, by key).
_UPSERT = """
WITH row AS (
  SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::int[], $5::text[],
    $6::text[], $7::text[], $8::text[], $9::numeric[], $10::text[], $11::date[],
    $12::timestamptz[], $13::text[], $14::int[], $15::timestamptz[], $16::timestamptz[],
    $17::timestamptz[], $18::boolean[], $19::timestamptz[], $20::text[])
    AS row(deal_id, opened_position, last_position, version, name, owner, stage, status,
           amount, currency, close_date, stage_entered_at, pipeline_key, pipeline_version,
           opened_at, last_buyer_activity_at, last_evidence_at, has_next_step,
           last_recorded_at, state)
), deal AS (
  INSERT INTO deals (deal_id, opened_position, last_position, version, name, owner, stage,
                     status, amount, currency, close_date, stage_entered_at, pipeline_key,
                     pipeline_version, opened_at, last_buyer_activity_at, last_evidence_at,
                     has_next_step, last_recorded_at)
  SELECT deal_id, opened_position, last_position, version, name, owner, stage, status, amount,
         currency, close_date, stage_entered_at, pipeline_key, pipeline_version, opened_at,
         last_buyer_activity_at, last_evidence_at, has_next_step, last_recorded_at
  FROM row
  ON CONFLICT (deal_id) DO UPDATE SET
    last_position = excluded.last_position, version = excluded.version,
    name = excluded.name, owner = excluded.owner, stage = excluded.stage,
    status = excluded.status, amount = excluded.amount, currency = excluded.currency,
    close_date = excluded.close_date, stage_entered_at = excluded.stage_entered_at,
    pipeline_key = excluded.pipeline_key, pipeline_version = excluded.pipeline_version,
    opened_at = excluded.opened_at, last_buyer_activity_at = excluded.last_buyer_activity_at,
    last_evidence_at = excluded.last_evidence_at, has_next_step = excluded.has_next_step,
    last_recorded_at = excluded.last_recorded_at
)
INSERT INTO deal_states (deal_id, state) SELECT deal_id, state::jsonb FROM row
ON CONFLICT (deal_id) DO UPDATE SET state = excluded.state
"""

COLUMNS = (
    "deal_id",
    "opened_position",
    "last_position",
    "version",
    "name",
    "owner",
    "stage",
    "status",
    "amount",
    "currency",
    "close_date",
    "stage_entered_at",
    "pipeline_key",
    "pipeline_version",
    "opened_at",
    "last_buyer_activity_at",
    "last_evidence_at",
    "has_next_step",
    "last_recorded_at",
)
"""A `deals` row's columns, in `deal_row`'s order."""
STATE_COLUMNS = ("deal_id", "state")
"""A `deal_states` row's columns, in `state_row`'s order."""


def deal_row(
    s: DealState, opened_position: int, last_position: int, last_recorded_at: datetime | None
) -> tuple[Any, ...]:
    """A `deals` row, its columns in the order of COLUMNS (`last_recorded_at`: when the
    deal's last event was recorded)."""
    return (
        s.deal_id,
        opened_position,
        last_position,
        s.version,
        s.name,
        s.owner,
        s.stage,
        s.status,
        s.amount,
        s.currency,
        s.close_date,
        s.stage_entered_at,
        s.pipeline_key,
        s.pipeline_version,
        s.opened_at or s.stage_entered_at,
        s.last_buyer_activity_at,
        max((item.occurred_at for item in s.evidence.values()), default=None),
        s.next_step is not None,
        last_recorded_at,
    )


def state_row(s: DealState) -> tuple[UUID, str]:
    """A `deal_states` row: the deal's id and its state as JSON."""
    return s.deal_id, STATE.dump_json(s).decode()


class DealsProjection:
    name: str = "deals"
    tables: tuple[str, ...] = ("deals", "deal_states")

    def __init__(self, versions: PipelineVersions | None = None) -> None:
        self.versions = versions or PipelineVersions()

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        ids = list(dict.fromkeys(envelope.stream_id for envelope in batch))
        rows = await connection.fetch(
            "SELECT deal_id, opened_position, state::text AS state"
            " FROM deals JOIN deal_states USING (deal_id) WHERE deal_id = ANY($1::uuid[])",
            ids,
        )
        states: dict[UUID, DealState] = {
            r["deal_id"]: STATE.validate_json(r["state"]) for r in rows
        }
        opened: dict[UUID, int] = {r["deal_id"]: r["opened_position"] for r in rows}
        last: dict[UUID, tuple[int, datetime]] = {}
        wanted = pipelines_named((envelope.recorded for envelope in batch), states.values())
        catalog = await self.versions.ensure(wanted, reader_on(connection))
        for envelope in batch:
            deal_id = envelope.stream_id
            state = states.get(deal_id) or DealState(deal_id=deal_id)
            states[deal_id] = evolve(state, envelope.recorded, catalog)
            opened.setdefault(deal_id, envelope.position)
            last[deal_id] = (envelope.position, envelope.recorded.recorded_at)
        columns: list[list[Any]] = [[] for _ in range(len(COLUMNS) + 1)]
        for deal_id in ids:
            state = states[deal_id]
            values = (*deal_row(state, opened[deal_id], *last[deal_id]), state_row(state)[1])
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        await connection.execute(_UPSERT, *columns)


# The deal's head is looked up in the log's index only when the deals projection has not
# applied every event yet: once that index outgrows the shared buffers, a random deal's page
# is a cold read (4.9M events, 40 MB of buffers: p99 1.2-44 ms; without it 0.3-4.2). The
# checkpoint is gap-safe (transactions below it have all ended), so one at the log's last
# (transaction, position) means every committed event is in the read model, read here in the
# same snapshot.
_LOAD_DEAL = (
    "SELECT (SELECT state::text FROM deal_states WHERE deal_id = $1) AS state,"
    " CASE WHEN EXISTS (SELECT FROM projection_checkpoints c,"
    "  (SELECT transaction_id, position FROM events"
    "   ORDER BY transaction_id DESC, position DESC LIMIT 1) h"
    "  WHERE c.name = 'deals' AND (c.transaction_id, c.position) >= (h.transaction_id, h.position))"
    " THEN NULL ELSE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1)"
    " END AS head"
)


async def load_deal(
    connection: asyncpg.Connection, deal_id: UUID
) -> tuple[DealState | None, int | None]:
    """The deal as the read model has it (None if it has not seen it) and the version of the
    deal's last event in the log (0: no such deal; None: the read model has applied every
    event, so what it has is current); one round trip."""
    row = await connection.fetchrow(_LOAD_DEAL, deal_id)
    state = STATE.validate_json(row["state"]) if row["state"] is not None else None
    head = row["head"]
    return state, None if head is None else int(head)


async def deals_then(
    connection: asyncpg.Connection,
    as_of: datetime,
    after_position: int,
    limit: int,
    *,
    owner: str | None = None,
    status: str | None = None,
) -> list[tuple[int, UUID, DealState | None]]:
    """The deals opened by `as_of`, after a cursor position, in opening order: (position,
    id, state), the state as the read model has it when every event it applied to the deal
    was recorded by then (None: not so, the deal is to be replayed to that time). Such a
    deal stood then as it stands now, so one of another owner or status is left out here."""
    rows = await connection.fetch(
        "SELECT d.opened_position, d.deal_id,"
        " CASE WHEN d.last_recorded_at <= $2 THEN s.state::text END AS state"
        " FROM deals d JOIN deal_states s USING (deal_id)"
        " WHERE d.opened_position > $1 AND (d.opened_at IS NULL OR d.opened_at <= $2)"
        " AND (d.last_recorded_at IS NULL OR d.last_recorded_at > $2"
        "  OR (($4::text IS NULL OR d.owner = $4) AND ($5::text IS NULL OR d.status = $5)))"
        " ORDER BY d.opened_position LIMIT $3",
        after_position,
        as_of,
        limit,
        owner,
        status,
    )
    return [
        (
            r["opened_position"],
            r["deal_id"],
            STATE.validate_json(r["state"]) if r["state"] is not None else None,
        )
        for r in rows
    ]


async def list_deals(
    connection: asyncpg.Connection,
    *,
    stage: str | None,
    owner: str | None,
    status: str | None,
    after_position: int,
    limit: int,
) -> list[tuple[int, DealState]]:
    """Deals in opening order after a cursor position, filtered."""
    rows = await connection.fetch(
        "SELECT opened_position, state::text AS state FROM deals JOIN deal_states USING (deal_id)"
        " WHERE opened_position > $1"
        " AND ($2::text IS NULL OR stage = $2)"
        " AND ($3::text IS NULL OR owner = $3)"
        " AND ($4::text IS NULL OR status = $4)"
        " ORDER BY opened_position LIMIT $5",
        after_position,
        stage,
        owner,
        status,
        limit,
    )
    return [(r["opened_position"], STATE.validate_json(r["state"])) for r in rows]


async def deals_holding(
    connection: asyncpg.Connection, owner: str | None, stage: str | None
) -> list[dict[str, Any]]:
    """Deals (of `owner`, in `stage`) counted per stage, status, currency, pipeline version
    and amount (snapshots.Holding's fields)."""
    rows = await connection.fetch(
        "SELECT stage, status, currency, pipeline_key, pipeline_version, amount,"
        " count(*) AS deals FROM deals"
        " WHERE ($1::text IS NULL OR owner = $1) AND ($2::text IS NULL OR stage = $2)"
        " GROUP BY 1, 2, 3, 4, 5, 6",
        owner,
        stage,
    )
    return [
        {
            "stage": r["stage"],
            "status": r["status"],
            "currency": r["currency"],
            "pipeline": (r["pipeline_key"], r["pipeline_version"]),
            "amount": r["amount"],
            "deals": r["deals"],
        }
        for r in rows
    ]


async def deals_page(
    connection: asyncpg.Connection,
    owner: str | None,
    stage: str | None,
    start: int,
    limit: int | None,
) -> list[DealState]:
    """Deals (of `owner`, in `stage`) in opening order, from the `start`th, at most `limit`."""
    rows = await connection.fetch(
        "SELECT state::text AS state FROM deals JOIN deal_states USING (deal_id)"
        " WHERE ($1::text IS NULL OR owner = $1) AND ($2::text IS NULL OR stage = $2)"
        " ORDER BY opened_position OFFSET $3 LIMIT $4",
        owner,
        stage,
        start,
        limit,
    )
    return [STATE.validate_json(r["state"]) for r in rows]


async def forecast_groups(
    connection: asyncpg.Connection, owner: str | None
) -> list[dict[str, Any]]:
    """Open deals with an amount, counted and summed per close month, owner, currency,
    pipeline version and stage (snapshots.OpenGroup's fields)."""
    rows = await connection.fetch(
        "SELECT to_char(close_date, 'YYYY-MM') AS close_month, owner, currency,"
        " pipeline_key AS key, pipeline_version AS version,"
        " stage, count(*) AS deals, sum(amount) AS amount FROM deals"
        " WHERE status = 'open' AND amount IS NOT NULL AND ($1::text IS NULL OR owner = $1)"
        " GROUP BY 1, 2, 3, 4, 5, 6",
        owner,
    )
    return [
        {
            "close_month": r["close_month"],
            "owner": r["owner"],
            "currency": r["currency"],
            "pipeline": (r["key"], r["version"]),
            "stage": r["stage"],
            "deals": r["deals"],
            "amount": r["amount"],
        }
        for r in rows
    ]


async def open_deals_on(
    connection: asyncpg.Connection, pipeline: str, other_than_version: int, limit: int
) -> list[UUID]:
    """Open deals of `pipeline` on a version other than `other_than_version`, in opening
    order, at most `limit`."""
    rows = await connection.fetch(
        "SELECT deal_id FROM deals WHERE status = 'open' AND pipeline_key = $1"
        " AND pipeline_version <> $2 ORDER BY opened_position LIMIT $3",
        pipeline,
        other_than_version,
        limit,
    )
    return [r["deal_id"] for r in rows]


async def owners(connection: asyncpg.Connection) -> list[str]:
    """Everyone who owns a deal, in name order."""
    rows = await connection.fetch(_OWNERS)
    return [r["owner"] for r in rows]


# Each next owner up the deals_owner index (a loose index scan): a few index probes per
# owner, where DISTINCT read every deal (at 100k deals, 1 ms against 37).
_OWNERS = """
WITH RECURSIVE o(owner) AS (
  SELECT min(owner) FROM deals
  UNION ALL
  SELECT (SELECT min(d.owner) FROM deals d WHERE d.owner > o.owner) FROM o
  WHERE o.owner IS NOT NULL
) SELECT owner FROM o WHERE owner IS NOT NULL
"""


@dataclass(frozen=True)
class BoardStep:
    description: str
    due_date: date


@dataclass(frozen=True)
class BoardDeal:
    """What a card on the board shows of an open deal, and its open flags' kinds."""

    deal_id: UUID
    name: str
    account: str | None
    owner: str
    stage: str
    amount: Decimal | None
    currency: str | None
    stage_entered_at: datetime | None
    next_step: BoardStep | None
    flags: tuple[str, ...]


# The board's deals, by stage: one column draws only its first few (those longest in it),
# so both queries read what a column shows and counts, never every open deal's state
# (at 100k deals, reading them all took ~0.8 s; these take ~10 and ~40 ms).
_BOARD_WHERE = """d.status = 'open' AND d.pipeline_key = $1 AND d.stage = ANY($2::text[])
  AND ($3::text IS NULL OR d.owner = $3)
  AND ($4::text IS NULL OR EXISTS (SELECT FROM deal_flags f
       WHERE f.deal_id = d.deal_id AND f.cleared_at IS NULL AND f.kind = $4))"""
_BOARD_FIRST = f"""
SELECT c.* FROM unnest($2::text[]) AS column_(stage) CROSS JOIN LATERAL (
  SELECT d.deal_id, d.name, s.state->>'account' AS account, d.owner, d.stage, d.amount,
         d.currency, d.stage_entered_at, s.state->'next_step'->>'description' AS step,
         (s.state->'next_step'->>'due_date')::date AS due,
         ARRAY(SELECT DISTINCT f.kind FROM deal_flags f
               WHERE f.deal_id = d.deal_id AND f.cleared_at IS NULL ORDER BY f.kind) AS kinds
  FROM deals d JOIN deal_states s USING (deal_id)
  WHERE d.stage = column_.stage AND {_BOARD_WHERE}
  ORDER BY coalesce(d.stage_entered_at, d.opened_at), d.deal_id LIMIT $5
) c
"""
_BOARD_TOTALS = f"""
SELECT d.stage, d.currency, count(*) AS deals, sum(d.amount) AS amount FROM deals d
WHERE {_BOARD_WHERE} GROUP BY d.stage, d.currency
"""


@dataclass
class BoardColumn:
    """A stage's open deals on the board: how many, their amounts by currency (no currency:
    ""), and the first `per_column` of them by when they entered the stage."""

    deals: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)
    first: list[BoardDeal] = field(default_factory=list)

    def add_amount(self, currency: str | None, amount: Decimal | None) -> None:
        if amount is not None:
            self.amounts[currency or ""] = self.amounts.get(currency or "", Decimal(0)) + amount


async def board(
    connection: asyncpg.Connection,
    pipeline_key: str,
    stages: Sequence[str],
    owner: str | None,
    flag: str | None,
    per_column: int,
) -> dict[str, BoardColumn]:
    """The open deals of a pipeline in `stages` as they are now (of one owner, with one open
    flag's kind, when given), column by column; no state is parsed."""
    filters = (pipeline_key, list(stages), owner, flag)
    columns = {stage: BoardColumn() for stage in stages}
    for r in await connection.fetch(_BOARD_TOTALS, *filters):
        column = columns[r["stage"]]
        column.deals += r["deals"]
        column.add_amount(r["currency"], r["amount"])
    for r in await connection.fetch(_BOARD_FIRST, *filters, per_column):
        columns[r["stage"]].first.append(
            BoardDeal(
                r["deal_id"],
                r["name"],
                r["account"],
                r["owner"],
                r["stage"],
                r["amount"],
                r["currency"],
                r["stage_entered_at"],
                BoardStep(r["step"], r["due"]) if r["step"] is not None else None,
                tuple(r["kinds"]),
            )
        )
    return columns


def board_of(
    deals: Iterable[BoardDeal], stages: Sequence[str], flag: str | None, per_column: int
) -> dict[str, BoardColumn]:
    """`board` over deals already in hand (the board of a past day, replayed): the same
    columns, counts, amounts and order."""
    columns = {stage: BoardColumn() for stage in stages}
    for deal in deals:
        column = columns.get(deal.stage)
        if column is not None and (flag is None or flag in deal.flags):
            column.deals += 1
            column.add_amount(deal.currency, deal.amount)
            column.first.append(deal)
    for column in columns.values():
        # An open deal always entered its stage (on opening, at the latest).
        column.first.sort(key=lambda d: (d.stage_entered_at or _NEVER, d.deal_id))
        del column.first[per_column:]
    return columns


_NEVER = datetime.max.replace(tzinfo=UTC)
