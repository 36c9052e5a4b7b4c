"""Manager analytics over the `stage_intervals` read model: time in stage, conversion,
velocity, regressions, disqualifications and overrides.

Stays are filtered by the deal's owner, pipeline and size band while in the stage, and by
when the stay began (`from` <= entered_at < `to`). Durations are in days, from the recorded
times of the stage changes; only finished stays count toward time-in-stage.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import asyncpg

from app.domain.pipeline import DEFAULT_PIPELINE, NURTURE

# A stay's days from its stored duration (a double, computed once when the stay ended):
# extract() gives numeric, which made every report over many stays several times slower.
DAYS = "(duration_seconds / 86400.0)"


def band_labels(bounds: list[int]) -> list[str]:
    """The size bands' labels for these bounds, smallest first (without "unknown")."""
    edges = sorted(bounds)
    labels = [f"<{edges[0]}"] if edges else []
    labels += [f"{a}-{b}" for a, b in itertools.pairwise(edges)]
    labels += [f"{edges[-1]}+"] if edges else ["all"]
    return labels


def _band_sql(bounds: list[int]) -> str:
    edges = sorted(bounds)
    labels = band_labels(edges)
    cases = " ".join(
        f"WHEN amount < {edge} THEN '{label}'" for edge, label in zip(edges, labels, strict=False)
    )
    return f"(CASE WHEN amount IS NULL THEN 'unknown' {cases} ELSE '{labels[-1]}' END)"


@dataclass(frozen=True)
class Filters:
    owner: str | None
    pipeline: str | None
    start: datetime | None
    end: datetime | None
    size_band: str | None
    size_bands: list[int]
    """The configured band bounds `size_band` is a label of."""
    pipeline_version: int | None = None
    stage_keys: tuple[str, ...] = DEFAULT_PIPELINE.stage_keys
    """The stages in the order rows come in (the filtered pipeline's; default: default's)."""

    @property
    def band_sql(self) -> str:
        return _band_sql(self.size_bands)

    def where(self, first: int = 1) -> tuple[str, list[Any]]:
        """A WHERE clause over stage_intervals, with its arguments from $first on."""
        n = first
        sql = (
            f"($%d::text IS NULL OR owner = $%d) AND ($%d::text IS NULL OR pipeline = $%d)"
            f" AND ($%d::timestamptz IS NULL OR entered_at >= $%d)"
            f" AND ($%d::timestamptz IS NULL OR entered_at < $%d)"
            f" AND ($%d::text IS NULL OR {self.band_sql} = $%d)"
            f" AND ($%d::int IS NULL OR pipeline_version = $%d)"
        ) % (n, n, n + 1, n + 1, n + 2, n + 2, n + 3, n + 3, n + 4, n + 4, n + 5, n + 5)
        return sql, [
            self.owner,
            self.pipeline,
            self.start,
            self.end,
            self.size_band,
            self.pipeline_version,
        ]


def stage_order(stage_keys: tuple[str, ...]) -> Callable[[str], tuple[int, str]]:
    """A sort key: the pipeline's stages in their order, then nurture, then any others."""
    order = [*stage_keys, NURTURE]
    return lambda stage: (order.index(stage) if stage in order else len(order), stage)


@dataclass(frozen=True)
class Durations:
    stage: str
    group: str | None
    count: int
    mean_days: float
    median_days: float
    p90_days: float


GroupBy = Literal["owner", "size_band"] | None


async def durations(connection: asyncpg.Connection, f: Filters, by: GroupBy) -> list[Durations]:
    """Days of the finished stays per stage (and per owner or size band): count, mean,
    median, p90."""
    return (await durations_by(connection, f, (by,)))[by]


async def durations_by(
    connection: asyncpg.Connection, f: Filters, groupings: tuple[GroupBy, ...]
) -> dict[GroupBy, list[Durations]]:
    """`durations` for several groupings in one query (GROUPING SETS: the stays are read
    once, not once per grouping)."""
    sets = {None: "(stage)", "owner": "(stage, owner)", "size_band": "(stage, band)"}
    # GROUPING(x) is 0 on the rows grouped by x; asked only of columns some set groups by.
    owner, by_owner = ("owner", "GROUPING(owner)") if "owner" in groupings else ("NULL", "1")
    band, by_band = ("band", "GROUPING(band)") if "size_band" in groupings else ("NULL", "1")
    where, args = f.where()
    rows = await connection.fetch(
        f"SELECT stage, {owner} AS owner, {band} AS band, {by_owner} AS by_owner,"
        f" {by_band} AS by_band,"
        f" count(*) AS n, avg(days) AS mean,"
        f" percentile_cont(0.5) WITHIN GROUP (ORDER BY days) AS median,"
        f" percentile_cont(0.9) WITHIN GROUP (ORDER BY days) AS p90"
        f" FROM (SELECT stage, owner, {f.band_sql} AS band, {DAYS} AS days"
        f" FROM stage_intervals WHERE left_at IS NOT NULL AND {where}) AS stays"
        f" GROUP BY GROUPING SETS ({', '.join(sets[by] for by in groupings)})",
        *args,
    )
    key = stage_order(f.stage_keys)
    found: dict[GroupBy, list[Durations]] = {by: [] for by in groupings}
    for r in rows:
        by: GroupBy = "owner" if r["by_owner"] == 0 else "size_band" if r["by_band"] == 0 else None
        group = {None: None, "owner": r["owner"], "size_band": r["band"]}[by]
        found[by].append(
            Durations(
                stage=r["stage"],
                group=group,
                count=r["n"],
                mean_days=round(float(r["mean"]), 4),
                median_days=round(float(r["median"]), 4),
                p90_days=round(float(r["p90"]), 4),
            )
        )
    for listed in found.values():
        listed.sort(key=lambda d: (key(d.stage), d.group or ""))
    return found


@dataclass(frozen=True)
class StageConversion:
    stage: str
    entered: int
    moved_forward: int
    regressed: int
    disqualified: int
    nurtured: int
    still_there: int
    won: int
    to_next_rate: float | None
    to_won_rate: float | None


async def conversion(connection: asyncpg.Connection, f: Filters) -> list[StageConversion]:
    """Per stage in pipeline order: deals entered (once each), how their last stay there
    ended (but `regressed` counts every stay that ended in a regression), how many were won
    later, and the rates."""
    where, args = f.where()
    rows = await connection.fetch(
        # The stays inlined into both uses and only the columns used: materialized whole,
        # they cost half the query at 160k stays.
        "WITH stays AS NOT MATERIALIZED (SELECT deal_id, stage, seq, left_how"
        " FROM stage_intervals WHERE " + where + "),"
        " last_stay AS (SELECT DISTINCT ON (deal_id, stage) deal_id, stage, left_how"
        "   FROM stays ORDER BY deal_id, stage, seq DESC),"
        " won AS (SELECT DISTINCT deal_id FROM stage_intervals WHERE left_how = 'won'),"
        # Every stay that ended in a regression, as /analytics/regressions counts them.
        " regressed AS (SELECT stage, count(*) AS n FROM stays"
        "   WHERE left_how = 'regressed' GROUP BY stage)"
        " SELECT stage, count(*) AS entered,"
        " count(*) FILTER (WHERE left_how IN ('advanced', 'won')) AS forward,"
        " coalesce(min(regressed.n), 0) AS regressed,"
        " count(*) FILTER (WHERE left_how = 'disqualified') AS disqualified,"
        " count(*) FILTER (WHERE left_how IN ('nurtured', 'reactivated')) AS nurtured,"
        " count(*) FILTER (WHERE left_how IS NULL) AS still,"
        " count(*) FILTER (WHERE won.deal_id IS NOT NULL) AS won"
        " FROM last_stay LEFT JOIN won USING (deal_id) LEFT JOIN regressed USING (stage)"
        " GROUP BY stage",
        *args,
    )
    by_stage = {r["stage"]: r for r in rows}
    order = [*f.stage_keys, NURTURE]
    out = []
    for stage in [s for s in order if s in by_stage] + sorted(set(by_stage) - set(order)):
        r = by_stage[stage]
        entered = r["entered"]
        out.append(
            StageConversion(
                stage=stage,
                entered=entered,
                moved_forward=r["forward"],
                regressed=r["regressed"],
                disqualified=r["disqualified"],
                nurtured=r["nurtured"],
                still_there=r["still"],
                won=r["won"],
                to_next_rate=round(r["forward"] / entered, 4) if entered else None,
                to_won_rate=round(r["won"] / entered, 4) if entered else None,
            )
        )
    return out


@dataclass(frozen=True)
class WeekPoint:
    week: date
    stage: str
    median_days: float
    stays_finished: int
    advanced: int


async def velocity(connection: asyncpg.Connection, f: Filters) -> list[WeekPoint]:
    """Per week and stage: median days of the stays finished that week, and advances."""
    where, args = f.where()
    rows = await connection.fetch(
        f"SELECT (date_trunc('week', left_at AT TIME ZONE 'UTC'))::date AS week, stage,"
        f" percentile_cont(0.5) WITHIN GROUP (ORDER BY {DAYS}) AS median, count(*) AS n,"
        f" count(*) FILTER (WHERE left_how IN ('advanced', 'won')) AS advanced"
        f" FROM stage_intervals WHERE left_at IS NOT NULL AND {where}"
        f" GROUP BY week, stage",
        *args,
    )
    key = stage_order(f.stage_keys)
    rows = sorted(rows, key=lambda r: (r["week"], key(r["stage"])))
    return [
        WeekPoint(
            week=r["week"],
            stage=r["stage"],
            median_days=round(float(r["median"]), 4),
            stays_finished=r["n"],
            advanced=r["advanced"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class StageRegressions:
    stage: str
    stays_finished: int
    regressed: int
    rate: float
    by_trigger: dict[str, int]


async def regressions(connection: asyncpg.Connection, f: Filters) -> list[StageRegressions]:
    """Per stage: finished stays, how many ended in a regression, and on which trigger."""
    where, args = f.where()
    rows = await connection.fetch(
        "SELECT stage, left_how, left_reason, count(*) AS n FROM stage_intervals"
        " WHERE left_at IS NOT NULL AND " + where + " GROUP BY stage, left_how, left_reason",
        *args,
    )
    finished: dict[str, int] = defaultdict(int)
    triggers: dict[str, dict[str, int]] = defaultdict(dict)
    key = stage_order(f.stage_keys)
    for r in rows:
        finished[r["stage"]] += r["n"]
        if r["left_how"] == "regressed":
            triggers[r["stage"]][r["left_reason"]] = r["n"]
    return [
        StageRegressions(
            stage=stage,
            stays_finished=total,
            regressed=sum(triggers[stage].values()),
            rate=round(sum(triggers[stage].values()) / total, 4),
            by_trigger=dict(sorted(triggers[stage].items())),
        )
        for stage, total in sorted(finished.items(), key=lambda item: key(item[0]))
    ]


@dataclass(frozen=True)
class Disqualifications:
    total: int
    by_reason: dict[str, int]
    by_stage: dict[str, int]


async def disqualifications(connection: asyncpg.Connection, f: Filters) -> Disqualifications:
    """Disqualified deals: how many, by reason and by the stage they left."""
    where, args = f.where()
    rows = await connection.fetch(
        "SELECT stage, left_reason, count(*) AS n FROM stage_intervals"
        " WHERE left_how = 'disqualified' AND " + where + " GROUP BY stage, left_reason",
        *args,
    )
    by_reason: dict[str, int] = defaultdict(int)
    by_stage: dict[str, int] = defaultdict(int)
    for r in rows:
        by_reason[r["left_reason"]] += r["n"]
        by_stage[r["stage"]] += r["n"]
    return Disqualifications(
        total=sum(by_reason.values()),
        by_reason=dict(sorted(by_reason.items())),
        by_stage=dict(sorted(by_stage.items())),
    )


@dataclass(frozen=True)
class OverrideCount:
    manager: str
    manager_name: str | None
    manager_role: str | None
    stage: str
    overrides: int
    share_of_forward_moves: float


async def overrides(connection: asyncpg.Connection, f: Filters) -> list[OverrideCount]:
    """Per manager and stage: forward moves made on the manager's override, and their share
    of all forward moves from that stage."""
    where, args = f.where()
    rows = await connection.fetch(
        "WITH forward AS (SELECT stage, left_override_by FROM stage_intervals"
        " WHERE left_how IN ('advanced', 'won') AND " + where + "),"
        " totals AS (SELECT stage, count(*) AS n FROM forward GROUP BY stage)"
        " SELECT f.left_override_by AS manager, k.name, k.role, f.stage, count(*) AS n,"
        " t.n AS total FROM forward f JOIN totals t USING (stage)"
        # The key's name and role, as the API keys table has them (keys are never deleted).
        " LEFT JOIN api_keys k ON k.key_id::text = f.left_override_by"
        " WHERE f.left_override_by IS NOT NULL"
        " GROUP BY f.left_override_by, k.name, k.role, f.stage, t.n ORDER BY manager, stage",
        *args,
    )
    return [
        OverrideCount(
            manager=r["manager"],
            manager_name=r["name"],
            manager_role=r["role"],
            stage=r["stage"],
            overrides=r["n"],
            share_of_forward_moves=round(r["n"] / r["total"], 4),
        )
        for r in rows
    ]


async def won_by_owner(
    connection: asyncpg.Connection, start: datetime, end: datetime, recorded_by: datetime
) -> dict[str, Any]:
    """Amounts won in [start, end) per owner at the win, counting wins recorded by
    `recorded_by`."""
    rows = await connection.fetch(
        "SELECT owner, coalesce(sum(amount), 0) AS won FROM stage_intervals"
        " WHERE left_how = 'won' AND left_at >= $1 AND left_at < $2 AND left_at <= $3"
        " GROUP BY owner",
        start,
        end,
        recorded_by,
    )
    return {r["owner"]: r["won"] for r in rows}


async def closed_stays(
    connection: asyncpg.Connection,
    pipeline: str,
    owner: str | None,
    start: datetime,
    end: datetime,
    recorded_by: datetime,
) -> list[tuple[Any, str, bool, float | None]]:
    """Every stay of the deals of `pipeline` closed (won or disqualified) in [start, end) and
    by `recorded_by`: (deal, stage, won, days of the stay unless the deal closed from it)."""
    rows = await connection.fetch(
        "WITH closed AS (SELECT deal_id, left_how = 'won' AS won FROM stage_intervals"
        "   WHERE left_how IN ('won', 'disqualified') AND left_at >= $1 AND left_at < $2"
        "   AND left_at <= $3 AND pipeline = $4 AND ($5::text IS NULL OR owner = $5))"
        f" SELECT i.deal_id, i.stage, c.won, CASE WHEN i.left_how IN ('won', 'disqualified')"
        f"   THEN NULL ELSE {DAYS} END AS days"
        " FROM stage_intervals i JOIN closed c USING (deal_id)"
        " WHERE i.left_at IS NOT NULL ORDER BY i.deal_id, i.seq",
        start,
        end,
        recorded_by,
        pipeline,
        owner,
    )
    return [
        (r["deal_id"], r["stage"], r["won"], None if r["days"] is None else float(r["days"]))
        for r in rows
    ]
