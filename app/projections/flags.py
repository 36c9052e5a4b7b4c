"""The `deal_flags` read model: velocity flags raised and cleared, with the numbers behind them.

Flags are evaluated just before and just after each event, at the time it was recorded: a
flag time raised before the event is recorded (raised when its condition began), one the
event ends is cleared at that moment. Between events, `sweep` (run periodically by the
projector) raises what time alone has brought. Time never clears a flag; events do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import TypeAdapter

from app.domain.flags import (
    DRIFTING,
    LATE,
    UNTIMED_INPUTS,
    Flag,
    FlagRules,
    Subject,
    advance,
    evaluate,
    next_change,
)
from app.domain.pipeline import ACTIVE, NURTURE, Catalog
from app.domain.state import DealState, pipelines_named, replace
from app.domain.webhooks import deal_summary
from app.events.pipelines import PipelineVersions, reader_on
from app.projections.runner import Envelope

SUBJECT = TypeAdapter(Subject)


@dataclass(frozen=True)
class FlagRow:
    deal_id: UUID
    kind: str
    raised_at: datetime
    cleared_at: datetime | None
    severity: str
    numbers: dict[str, Any]
    evaluated_at: datetime
    dropped: bool = False
    """Removed, never having stood: a sweep raised it later than this event's time (the
    event was still on its way; it is raised again when it truly stands), or it ends the
    instant it began (e.g. `no_next_step` between a command's DealOpened and NextStepSet)."""


def _end(row: FlagRow, at: datetime) -> FlagRow:
    return replace(row, dropped=True) if row.raised_at >= at else replace(row, cleared_at=at)


def reconcile(
    deal_id: UUID,
    open_rows: dict[str, FlagRow],
    flags: list[Flag],
    at: datetime,
    *,
    clear: bool,
    kinds: frozenset[str] | None = None,
) -> list[FlagRow]:
    """Rows to write so the open flags match `flags` at `at`; `open_rows` is updated. With
    `kinds`, `flags` judged only those: open flags of other kinds are left as they are."""
    written = []
    standing = {flag.kind for flag in flags}
    if clear:
        ended = [k for k in open_rows if k not in standing and (kinds is None or k in kinds)]
        for kind in ended:
            written.append(_end(open_rows.pop(kind), at))
    for flag in flags:
        row = open_rows.get(flag.kind)
        if row is None or row.raised_at != flag.raised_at:
            if row is not None:
                written.append(_end(row, at))
            row = FlagRow(deal_id, flag.kind, flag.raised_at, None, flag.severity, {}, at)
        row = replace(row, severity=flag.severity, numbers=flag.numbers, evaluated_at=at)
        open_rows[flag.kind] = row
        written.append(row)
    return written


_UPSERT_FLAGS = """
INSERT INTO deal_flags (deal_id, kind, raised_at, cleared_at, severity, numbers, evaluated_at)
SELECT d, k, r, c, s, n::jsonb, e
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[],
            $6::text[], $7::timestamptz[]) AS row(d, k, r, c, s, n, e)
ON CONFLICT (deal_id, kind, raised_at) DO UPDATE SET
    cleared_at = excluded.cleared_at, severity = excluded.severity,
    numbers = excluded.numbers, evaluated_at = excluded.evaluated_at
"""
_UPSERT_SUBJECTS = """
INSERT INTO flag_subjects (deal_id, owner, stage, status, last_recorded_at, subject, due_at)
SELECT d, o, st, s, l, j::jsonb, due
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
            $7::timestamptz[]) AS row(d, o, st, s, l, j, due)
ON CONFLICT (deal_id) DO UPDATE SET owner = excluded.owner, stage = excluded.stage,
    status = excluded.status, last_recorded_at = excluded.last_recorded_at,
    subject = excluded.subject, due_at = excluded.due_at
"""

# Between events the sweep visits a deal only when time may raise or escalate one of its
# flags (`next_change`), and, while one of its flags' numbers grows with time (days in stage,
# days overdue), at least this often to bring them up to date. Visiting every open deal every
# minute kept the projector busy most of the time at 80k open deals.
NUMBERS_REFRESH = timedelta(hours=1)


def due_at(
    subject: Subject, at: datetime, standing: Sequence[Flag], rules: FlagRules, catalog: Catalog
) -> datetime | None:
    """When the sweep should next judge this deal, judged at `at` with `standing` flags
    (None: never, by time alone)."""
    if subject.state.status not in (ACTIVE, NURTURE):
        return None
    change = next_change(subject, at, rules, catalog)
    if any(flag.kind in DRIFTING for flag in standing):
        refresh = at + NUMBERS_REFRESH
        return refresh if change is None else min(change, refresh)
    return change


_RECORD_RAISINGS = """
INSERT INTO flag_raisings (deal_id, kind, raised_at, severity, numbers, deal, evaluated_at)
SELECT d, k, r, s, n::jsonb, j::jsonb, e
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[]) AS row(d, k, r, s, n, j, e)
ON CONFLICT DO NOTHING
"""


RaisingKey = tuple[UUID, str, datetime, str]


def _raisings_known(open_rows: Mapping[UUID, Mapping[str, FlagRow]]) -> set[RaisingKey]:
    """The open flags a batch starts with: written again as it goes, but not raised anew."""
    return {
        (row.deal_id, row.kind, row.raised_at, row.severity)
        for rows in open_rows.values()
        for row in rows.values()
    }


async def _record_raisings(
    connection: asyncpg.Connection,
    rows: list[FlagRow],
    deals: Mapping[UUID, DealState],
    known: set[RaisingKey],
) -> None:
    """The outbox of flag.raised webhooks: each open flag once per severity, in this
    projection's transaction. A rebuild finds them recorded and adds nothing new."""
    columns: list[list[Any]] = [[] for _ in range(7)]
    for r in rows:
        if r.cleared_at is not None or (r.deal_id, r.kind, r.raised_at, r.severity) in known:
            continue
        values = (
            r.deal_id,
            r.kind,
            r.raised_at,
            r.severity,
            json.dumps(r.numbers, sort_keys=True),
            json.dumps(deal_summary(deals[r.deal_id])),
            r.evaluated_at,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    if columns[0]:
        await connection.execute(_RECORD_RAISINGS, *columns)


async def _write_flags(
    connection: asyncpg.Connection,
    rows: list[FlagRow],
    deals: Mapping[UUID, DealState],
    known: set[RaisingKey],
) -> None:
    final = {(r.deal_id, r.kind, r.raised_at): r for r in rows}
    dropped = [key for key, row in final.items() if row.dropped]
    if dropped:
        await connection.execute(
            "DELETE FROM deal_flags USING unnest($1::uuid[], $2::text[], $3::timestamptz[])"
            " AS d(deal_id, kind, raised_at) WHERE deal_flags.deal_id = d.deal_id"
            " AND deal_flags.kind = d.kind AND deal_flags.raised_at = d.raised_at",
            *[list(column) for column in zip(*dropped, strict=True)],
        )
        for key in dropped:
            del final[key]
    if not final:
        return
    columns: list[list[Any]] = [[] for _ in range(7)]
    for r in final.values():
        values = (
            r.deal_id,
            r.kind,
            r.raised_at,
            r.cleared_at,
            r.severity,
            json.dumps(r.numbers, sort_keys=True),
            r.evaluated_at,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    await connection.execute(_UPSERT_FLAGS, *columns)
    await _record_raisings(connection, list(final.values()), deals, known)


async def _open_rows(
    connection: asyncpg.Connection, ids: Sequence[UUID]
) -> dict[UUID, dict[str, FlagRow]]:
    rows = await connection.fetch(
        "SELECT deal_id, kind, raised_at, cleared_at, severity, numbers::text AS numbers,"
        " evaluated_at FROM deal_flags WHERE cleared_at IS NULL AND deal_id = ANY($1::uuid[])",
        list(ids),
    )
    found: dict[UUID, dict[str, FlagRow]] = {}
    for r in rows:
        row = _flag_row(dict(r))
        found.setdefault(row.deal_id, {})[row.kind] = row
    return found


def _flag_row(record: Mapping[str, Any]) -> FlagRow:
    return FlagRow(**{**record, "numbers": json.loads(record["numbers"])})


class FlagsProjection:
    name: str = "flags"
    tables: tuple[str, ...] = ("deal_flags", "flag_subjects")

    def __init__(
        self, rules: FlagRules | None = None, versions: PipelineVersions | None = None
    ) -> None:
        self.rules = rules or FlagRules()
        self.versions = versions or PipelineVersions()
        self._more_due = False
        # The first sweep after a start visits every open deal: the due times stored were
        # set under the rules of the process before, and thresholds may have changed since.
        self._every_after: UUID | None = UUID(int=0)
        # Small pages: a page is judged without yielding, holding back the other
        # projections of the process (1,000 a page: +0.4 s lag p99 while 80k deals swept).
        self.sweep_page_size = 25

    async def apply(self, connection: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        ids = list(dict.fromkeys(envelope.stream_id for envelope in batch))
        stored = await connection.fetch(
            "SELECT deal_id, subject::text AS subject, last_recorded_at FROM flag_subjects"
            " WHERE deal_id = ANY($1::uuid[])",
            ids,
        )
        subjects = {r["deal_id"]: SUBJECT.validate_json(r["subject"]) for r in stored}
        last_at = {r["deal_id"]: r["last_recorded_at"] for r in stored}
        wanted = pipelines_named(
            (envelope.recorded for envelope in batch), (s.state for s in subjects.values())
        )
        catalog = await self.versions.ensure(wanted, reader_on(connection))
        open_rows = await _open_rows(connection, ids)
        known = _raisings_known(open_rows)
        written: list[FlagRow] = []
        standing: dict[UUID, list[Flag]] = {}
        for envelope in batch:
            deal_id = envelope.stream_id
            at = envelope.recorded.recorded_at
            subject = subjects.get(deal_id) or Subject(DealState(deal_id=deal_id))
            mine = open_rows.setdefault(deal_id, {})
            if subject.state.exists:
                before = evaluate(subject, at, self.rules, catalog)
                written += reconcile(deal_id, mine, before, at, clear=False)
            subject = advance(subject, envelope.recorded, catalog)
            after = evaluate(subject, at, self.rules, catalog)
            written += reconcile(deal_id, mine, after, at, clear=True)
            subjects[deal_id] = subject
            last_at[deal_id] = at
            standing[deal_id] = after
        states = {deal_id: subject.state for deal_id, subject in subjects.items()}
        await _write_flags(connection, written, states, known)
        columns: list[list[Any]] = [[] for _ in range(7)]
        for deal_id in ids:
            subject = subjects[deal_id]
            values = (
                deal_id,
                subject.state.owner,
                subject.state.stage,
                subject.state.status,
                last_at[deal_id],
                SUBJECT.dump_json(subject).decode(),
                due_at(subject, last_at[deal_id], standing[deal_id], self.rules, catalog),
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        await connection.execute(_UPSERT_SUBJECTS, *columns)

    async def tick(self, connection: asyncpg.Connection, now: datetime) -> int:
        """Raise what time alone has brought since the last event (clears nothing), one page
        per call: of every open deal on the first sweep after a start, then of the deals due
        (`due_at`). `sweeping` says more pages follow; the runner applies new events
        between them."""
        if self._every_after is not None:
            written, self._every_after = await sweep_page(
                connection,
                now,
                self.rules,
                self.versions,
                self._every_after,
                self.sweep_page_size,
            )
            return written
        rows = await connection.fetch(
            "SELECT deal_id, subject::text AS subject FROM flag_subjects"
            " WHERE due_at <= $1 ORDER BY due_at, deal_id LIMIT $2",
            now,
            self.sweep_page_size,
        )
        self._more_due = len(rows) == self.sweep_page_size
        return await _judge(connection, rows, now, self.rules, self.versions)

    @property
    def sweeping(self) -> bool:
        return self._every_after is not None or self._more_due


async def sweep(
    connection: asyncpg.Connection,
    as_of: datetime,
    rules: FlagRules,
    versions: PipelineVersions | None = None,
    page: int = 1000,
) -> int:
    """Evaluate every open or nurtured deal at `as_of`; returns the flag rows written."""
    after: UUID | None = UUID(int=0)
    total = 0
    while after is not None:
        written, after = await sweep_page(connection, as_of, rules, versions, after, page)
        total += written
    return total


async def sweep_page(
    connection: asyncpg.Connection,
    as_of: datetime,
    rules: FlagRules,
    versions: PipelineVersions | None,
    after: UUID,
    page: int = 1000,
) -> tuple[int, UUID | None]:
    """One page of a sweep: the open or nurtured deals after `after` (by id), evaluated at
    `as_of`; returns the flag rows written and where the next page starts (None: done)."""
    rows = await connection.fetch(
        "SELECT deal_id, subject::text AS subject FROM flag_subjects"
        " WHERE status = ANY($1::text[]) AND deal_id > $2 AND last_recorded_at <= $3"
        " ORDER BY deal_id LIMIT $4",
        [ACTIVE, NURTURE],
        after,
        as_of,
        page,
    )
    if not rows:
        return 0, None
    written = await _judge(connection, rows, as_of, rules, versions)
    return written, (rows[-1]["deal_id"] if len(rows) == page else None)


async def _judge(
    connection: asyncpg.Connection,
    rows: Sequence[asyncpg.Record],
    as_of: datetime,
    rules: FlagRules,
    versions: PipelineVersions | None,
) -> int:
    """Judge these subjects at `as_of`: raise what time has brought, and set when each is
    due next; returns the flag rows written."""
    if not rows:
        return 0
    ids = [r["deal_id"] for r in rows]
    open_rows = await _open_rows(connection, ids)
    known = _raisings_known(open_rows)
    written: list[FlagRow] = []
    subjects = [(r["deal_id"], SUBJECT.validate_json(r["subject"])) for r in rows]
    catalog = await _catalog(connection, versions, [s.state for _, s in subjects])
    deals: dict[UUID, DealState] = {}
    due: list[datetime | None] = []
    for deal_id, subject in subjects:
        deals[deal_id] = subject.state
        mine = open_rows.setdefault(deal_id, {})
        standing = evaluate(subject, as_of, rules, catalog)
        written += reconcile(deal_id, mine, standing, as_of, clear=False)
        due.append(due_at(subject, as_of, standing, rules, catalog))
    await _write_flags(connection, written, deals, known)
    await connection.execute(
        "UPDATE flag_subjects s SET due_at = d.due FROM unnest($1::uuid[], $2::timestamptz[])"
        " AS d(deal_id, due) WHERE s.deal_id = d.deal_id",
        ids,
        due,
    )
    return len(written)


async def _catalog(
    connection: asyncpg.Connection, versions: PipelineVersions | None, states: list[DealState]
) -> Catalog:
    versions = versions or PipelineVersions()
    return await versions.ensure(pipelines_named((), states), reader_on(connection))


async def subject_of(connection: asyncpg.Connection, deal_id: UUID) -> Subject | None:
    text = await connection.fetchval(
        "SELECT subject::text FROM flag_subjects WHERE deal_id = $1", deal_id
    )
    return SUBJECT.validate_json(text) if text is not None else None


async def flags_of(connection: asyncpg.Connection, deal_id: UUID) -> list[FlagRow]:
    """The deal's flags, open and cleared, oldest first."""
    rows = await connection.fetch(
        "SELECT deal_id, kind, raised_at, cleared_at, severity, numbers::text AS numbers,"
        " evaluated_at FROM deal_flags WHERE deal_id = $1 ORDER BY raised_at, kind",
        deal_id,
    )
    return [_flag_row(dict(r)) for r in rows]


@dataclass(frozen=True)
class FlagFilter:
    kind: str | None = None
    severity: str | None = None
    owner: str | None = None
    stage: str | None = None

    def admits_deal(self, state: DealState) -> bool:
        return (self.owner is None or state.owner == self.owner) and (
            self.stage is None or state.stage == self.stage
        )

    def admits(self, flag: Flag) -> bool:
        return (self.kind is None or flag.kind == self.kind) and (
            self.severity is None or flag.severity == self.severity
        )


# Open flags are listed by (raised_at in microseconds since the epoch, deal_id, kind).
FlagKey = tuple[int, int, str]
FIRST_KEY: FlagKey = (-(2**53), -1, "")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def flag_key(flag: FlagRow) -> FlagKey:
    micros = (flag.raised_at - EPOCH) // timedelta(microseconds=1)
    return micros, flag.deal_id.int, flag.kind


@dataclass(frozen=True)
class FlagOnDeal:
    flag: FlagRow
    state: DealState
    """The deal as the flag was judged on."""


async def open_flags(
    connection: asyncpg.Connection, where: FlagFilter, after: FlagKey, limit: int
) -> list[FlagOnDeal]:
    """Open flags of deals as they are now, after `after` in key order, at most `limit`."""
    rows = await connection.fetch(
        "SELECT f.deal_id, f.kind, f.severity, f.raised_at, f.cleared_at,"
        " f.numbers::text AS numbers, f.evaluated_at, s.subject::text AS subject"
        " FROM deal_flags f JOIN flag_subjects s USING (deal_id)"
        " WHERE f.cleared_at IS NULL"
        " AND ($1::text IS NULL OR f.kind = $1) AND ($2::text IS NULL OR f.severity = $2)"
        " AND ($3::text IS NULL OR s.owner = $3) AND ($4::text IS NULL OR s.stage = $4)"
        ' AND (f.raised_at, f.deal_id, f.kind COLLATE "C")'
        " > ('epoch'::timestamptz + $5::bigint * interval '1 microsecond',"
        ' $6::uuid, $7::text COLLATE "C")'
        ' ORDER BY f.raised_at, f.deal_id, f.kind COLLATE "C" LIMIT $8',
        where.kind,
        where.severity,
        where.owner,
        where.stage,
        after[0],
        UUID(int=max(after[1], 0)),
        after[2],
        limit,
    )
    found = []
    for r in rows:
        row = dict(r)
        subject = SUBJECT.validate_json(row.pop("subject"))
        found.append(FlagOnDeal(_flag_row(row), subject.state))
    return found


async def subjects_recorded_by(
    connection: asyncpg.Connection, as_of: datetime
) -> list[tuple[UUID, Subject | None]]:
    """Every deal's stored flag subject, or None where it has events recorded after `as_of`
    (the caller replays those)."""
    rows = await connection.fetch(
        "SELECT deal_id, CASE WHEN last_recorded_at <= $1 THEN subject::text END AS subject"
        " FROM flag_subjects",
        as_of,
    )
    return [
        (r["deal_id"], SUBJECT.validate_json(r["subject"]) if r["subject"] is not None else None)
        for r in rows
    ]


async def open_subjects_by(
    connection: asyncpg.Connection, as_of: datetime, owner: str | None
) -> list[tuple[UUID, Subject | None]]:
    """The stored flag subjects of deals open (and `owner`'s) as they stood at `as_of`, or
    None for deals with events recorded after `as_of` (whatever they were then: the caller
    replays those). Only open deals' subjects are parsed."""
    rows = await connection.fetch(
        "SELECT deal_id, CASE WHEN last_recorded_at <= $1 THEN subject::text END AS subject"
        " FROM flag_subjects WHERE last_recorded_at > $1"
        " OR (status = 'open' AND ($2::text IS NULL OR owner = $2))",
        as_of,
        owner,
    )
    return [
        (r["deal_id"], SUBJECT.validate_json(r["subject"]) if r["subject"] is not None else None)
        for r in rows
    ]


# Whether the read models alone place a deal in the week's review ($2, $3]: an open deal
# (of $1) whose events all came by $3 (else the read model is ahead of the time asked)
# that changed stage in the week or has a flag open.
_LATER = "coalesce(d.last_recorded_at > $3, false)"
_MOVED = "coalesce(d.stage_entered_at > $2 AND d.stage_entered_at <= $3, false)"
_OPEN_OF_OWNER = "d.status = 'open' AND ($1::text IS NULL OR d.owner = $1)"
_WEEK_LISTED = f"""
SELECT d.deal_id, d.owner, d.name FROM deals d
WHERE {_OPEN_OF_OWNER} AND NOT {_LATER}
  AND d.deal_id NOT IN (SELECT unnest($4::uuid[]))  -- hashed once, not scanned per row
  AND ({_MOVED} OR d.deal_id IN (SELECT f.deal_id FROM deal_flags f WHERE f.cleared_at IS NULL))
"""


# What the timed rules read of a flag subject (`TIMED`): without `UNTIMED_INPUTS`, most of a
# subject's text (2.8 kB on average in the bench), so judging a due deal costs a fifth as
# much to parse.
_TIMED_SUBJECT = (
    "jsonb_set(s.subject, '{state}',"
    f" (s.subject->'state') - '{{{','.join(UNTIMED_INPUTS)}}}'::text[])::text"
)


async def weekly_unsure(
    connection: asyncpg.Connection, owner: str | None, since: datetime, at: datetime
) -> list[tuple[UUID, bool]]:
    """The deals the read models cannot place in the week's review without judging them,
    each with whether its events run past `at` (the caller replays it to then). An open deal
    neither moved nor flagged is only unsure while time may have raised a flag of it since
    the sweep last judged it (`subjects_of(timed=True)` has what that takes): the sweep stores when
    that can next happen (`due_at`, None: never by time alone; a flag may stand up to `LATE`
    before it), under the same flag rules as the API's (due ones are found by index; few,
    but after a long pause of the sweep)."""
    rows = await connection.fetch(
        "SELECT deal_id, true AS later FROM deals WHERE last_recorded_at > $3"
        " UNION ALL"
        " SELECT d.deal_id, false FROM flag_subjects s JOIN deals d USING (deal_id)"
        f" WHERE s.due_at <= $4 AND {_OPEN_OF_OWNER} AND NOT {_LATER} AND NOT {_MOVED}"
        # Probed per due deal (few), where the listing hashes every open flag once.
        "  AND NOT EXISTS (SELECT FROM deal_flags f"
        "   WHERE f.deal_id = d.deal_id AND f.cleared_at IS NULL)",
        owner,
        since,
        at,
        at + LATE,
    )
    return [(r["deal_id"], r["later"]) for r in rows]


Listed = tuple[str, str, UUID]
"""A deal's place in the week's review: (owner, name, id), compared as the review orders
them (code point order, as Python sorts strings and PostgreSQL's "C" collation bytes)."""


async def weekly_listing(
    connection: asyncpg.Connection,
    owner: str | None,
    since: datetime,
    at: datetime,
    unsure: Sequence[UUID],
    offset: int,
    limit: int | None,
) -> tuple[list[Listed], int]:
    """The deals the read models alone place in the week's review (moved, or a flag open),
    but for those `unsure` (the caller judges them: a sweep may flag one between the two
    reads), in the review's order from the `offset`th on, at most `limit`; and how many
    there are in all."""
    # The page walks deals_open_review in the review's order and stops at its end; the total
    # is counted apart (a shared CTE would collect every listed deal's place to sort it).
    rows = await connection.fetch(
        f"SELECT deal_id, owner, name, (SELECT count(*) FROM ({_WEEK_LISTED}) c) AS total"
        f" FROM ({_WEEK_LISTED}) l"
        ' ORDER BY owner COLLATE "C", name COLLATE "C", deal_id OFFSET $5 LIMIT $6',
        owner,
        since,
        at,
        list(unsure),
        offset,
        limit,
    )
    if not rows:  # a page past the end
        total = await connection.fetchval(
            f"SELECT count(*) FROM ({_WEEK_LISTED}) w", owner, since, at, list(unsure)
        )
        return [], total
    return [(r["owner"], r["name"], r["deal_id"]) for r in rows], rows[0]["total"]


async def subjects_of(
    connection: asyncpg.Connection, ids: Sequence[UUID], *, timed: bool = False
) -> dict[UUID, Subject]:
    """These deals' flag subjects; `timed`: only what the timed rules read (judge them for
    `TIMED` kinds only)."""
    rows = await connection.fetch(
        f"SELECT deal_id, {_TIMED_SUBJECT if timed else 's.subject::text'} AS subject"
        " FROM flag_subjects s WHERE deal_id = ANY($1::uuid[])",
        list(ids),
    )
    return {r["deal_id"]: SUBJECT.validate_json(r["subject"]) for r in rows}
