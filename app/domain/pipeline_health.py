"""Pipeline red flags: is the pipeline as a whole healthy? Pure: the deals' facts, the
history figures and the time are inputs.

Every threshold triggers *at* its value (a share of exactly 40 % is concentrated), so a
scripted dataset can sit on the boundary and a test can prove both sides of it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from app.domain.explanations import number
from app.domain.periods import Period
from app.domain.pipeline import Catalog, Pipeline, Stage
from app.domain.pipeline_facts import DealFacts, History

DAY = timedelta(days=1)
RULES = (
    "stage_concentration",
    "thin_early_pipeline",
    "stale_pipeline",
    "aging",
    "too_long_in_stage",
    "dead_leads",
    "coverage",
)


@dataclass(frozen=True)
class HealthRules:
    concentration_share: float = 0.40
    stale_days: float = 30
    stale_share: float = 0.30
    """The pipeline is stale when at least this share of open deals had no touch for
    `stale_days`."""
    dead_days: float = 60
    long_stay_ratio: float = 2.0
    long_stay_stages: tuple[str, ...] = ("proposal",)
    """Stages watched for long stays (a pipeline stage with `stall.long_stay_ratio` set is
    watched at that ratio too)."""
    early_stages: int = 2
    """The first n stages of a deal's pipeline are its early pipeline."""
    creation_window_days: float = 90


@dataclass(frozen=True)
class StageHealth:
    stage: str
    deals: int
    value: Decimal
    weighted: Decimal
    deal_share: float
    value_share: float
    expected_days: int | None
    mean_age_days: float
    p90_age_days: float


@dataclass(frozen=True)
class Finding:
    rule: str
    explanation: str
    numbers: dict[str, Any]
    deal_ids: tuple[UUID, ...] = ()
    stage: str | None = None


@dataclass(frozen=True)
class Health:
    open_deals: int
    open_value: Decimal
    herfindahl: float
    """Sum of squared value shares over stages: 1/number of stages (even) to 1 (all in
    one); 0 with no value."""
    stages: list[StageHealth]
    findings: list[Finding]
    dead_leads: list[DealFacts] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (as PostgreSQL's percentile_cont); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def herfindahl(values: Sequence[Decimal]) -> float:
    """Sum of squared shares of `values` (0 when they sum to nothing)."""
    total = sum(values, Decimal(0))
    if total <= 0:
        return 0.0
    return float(sum((v / total) ** 2 for v in values))


def _ratio(part: float | Decimal, whole: float | Decimal) -> float:
    return float(part) / float(whole) if whole else 0.0


def _money(value: Decimal | None) -> str:
    """An amount in plain notation (never 1E+4)."""
    return format(value or Decimal(0), "f")


def _pct(share: float) -> str:
    return f"{number(share * 100)} %"


def _days(since: datetime, as_of: datetime) -> float:
    return (as_of - since) / DAY


def assess(
    deals: Sequence[DealFacts],
    as_of: datetime,
    pipelines: Catalog,
    history: History,
    period: Period,
    rules: HealthRules | None = None,
) -> Health:
    """The pipeline's red flags at `as_of` over the open deals in `deals`."""
    rules = rules or HealthRules()
    open_deals = [d for d in deals if d.opened_at <= as_of]
    pipeline_of: dict[UUID, Pipeline] = {
        d.deal_id: pipelines.get(d.pipeline_key, d.pipeline_version) for d in open_deals
    }

    # Deals share a few (pipeline version, stage) pairs: each looked up once.
    stages_of: dict[tuple[str, int, str], tuple[Stage | None, Decimal]] = {}

    def looked_up(d: DealFacts) -> tuple[Stage | None, Decimal]:
        key = (d.pipeline_key, d.pipeline_version, d.stage)
        found = stages_of.get(key)
        if found is None:
            pipeline = pipeline_of[d.deal_id]
            stage = pipeline.stage(d.stage) if d.stage in pipeline.stage_keys else None
            chance = Decimal(str(stage.probability)) if stage else Decimal(0)
            found = stages_of[key] = (stage, chance)
        return found

    def stage_of(d: DealFacts) -> Stage | None:
        return looked_up(d)[0]

    def weighted(d: DealFacts) -> Decimal:
        stage, chance = looked_up(d)
        return d.value * chance if stage else Decimal(0)

    total_value = sum((d.value for d in open_deals), Decimal(0))
    by_stage: dict[str, list[DealFacts]] = defaultdict(list)
    for d in open_deals:
        by_stage[d.stage].append(d)
    order: list[str] = []
    first_of: dict[tuple[str, int], UUID] = {}  # each pipeline version's first deal by id
    for d in open_deals:
        version = (d.pipeline_key, d.pipeline_version)
        if version not in first_of or d.deal_id < first_of[version]:
            first_of[version] = d.deal_id
    for version in sorted(first_of, key=first_of.__getitem__):
        keys = pipelines.get(*version).stage_keys
        order += [k for k in keys if k not in order]
    order += sorted(set(by_stage) - set(order))

    stages: list[StageHealth] = []
    findings: list[Finding] = []
    for key in [k for k in order if k in by_stage]:
        group = by_stage[key]
        value = sum((d.value for d in group), Decimal(0))
        ages = [_days(d.stage_entered_at, as_of) for d in group]
        expected = {s.expected_days for d in group if (s := stage_of(d))}
        stages.append(
            StageHealth(
                stage=key,
                deals=len(group),
                value=value,
                weighted=sum((weighted(d) for d in group), Decimal(0)).quantize(Decimal("0.01")),
                deal_share=round(_ratio(len(group), len(open_deals)), 4),
                value_share=round(_ratio(value, total_value), 4),
                expected_days=max(expected) if expected else None,
                mean_age_days=round(sum(ages) / len(ages), 2),
                p90_age_days=round(percentile(ages, 0.9), 2),
            )
        )
    hhi = round(herfindahl([sum((d.value for d in by_stage[k]), Decimal(0)) for k in order]), 4)

    for row in stages:
        deal_share = _ratio(row.deals, len(open_deals))
        value_share = _ratio(row.value, total_value)
        if max(deal_share, value_share) >= rules.concentration_share:
            findings.append(
                Finding(
                    "stage_concentration",
                    f"{row.stage.capitalize()} holds {_pct(deal_share)} of open deals and "
                    f"{_pct(value_share)} of their value (limit {_pct(rules.concentration_share)};"
                    f" Herfindahl index {hhi:.2f}).",
                    {
                        "deals": row.deals,
                        "deal_share": round(deal_share, 4),
                        "value": _money(row.value),
                        "value_share": round(value_share, 4),
                        "threshold_share": rules.concentration_share,
                        "herfindahl": hhi,
                    },
                    tuple(d.deal_id for d in by_stage[row.stage]),
                    row.stage,
                )
            )
        ages = [_days(d.stage_entered_at, as_of) for d in by_stage[row.stage]]
        if row.expected_days is not None and sum(ages) / len(ages) >= row.expected_days:
            findings.append(
                Finding(
                    "aging",
                    f"Deals in {row.stage} have been there {number(row.mean_age_days)} days on"
                    f" average (p90 {number(row.p90_age_days)}), against "
                    f"{row.expected_days} expected.",
                    {
                        "mean_age_days": row.mean_age_days,
                        "p90_age_days": row.p90_age_days,
                        "expected_days": row.expected_days,
                    },
                    tuple(
                        d.deal_id
                        for d in by_stage[row.stage]
                        if _days(d.stage_entered_at, as_of) >= row.expected_days
                    ),
                    row.stage,
                )
            )

    findings += _long_stays(open_deals, stage_of, as_of, rules)
    findings += _stale(open_deals, as_of, rules)
    dead = [
        d
        for d in open_deals
        if not d.has_next_step
        and _days(d.last_buyer_activity_at or d.opened_at, as_of) >= rules.dead_days
    ]
    if dead:
        findings.append(
            Finding(
                "dead_leads",
                f"{len(dead)} open deal{'s' if len(dead) != 1 else ''} had no buyer touch for "
                f"{number(rules.dead_days)}+ days and no next step: disqualify or nurture them.",
                {"deals": len(dead), "threshold_days": rules.dead_days},
                tuple(d.deal_id for d in dead),
            )
        )
    findings += _thin_early(open_deals, pipeline_of, history, rules)
    findings += _coverage(open_deals, weighted, history, period)
    return Health(
        open_deals=len(open_deals),
        open_value=total_value,
        herfindahl=hhi,
        stages=stages,
        findings=findings,
        dead_leads=dead,
    )


def _long_stays(
    deals: Sequence[DealFacts],
    stage_of: Callable[[DealFacts], Stage | None],
    as_of: datetime,
    rules: HealthRules,
) -> list[Finding]:
    found: dict[str, list[tuple[DealFacts, float, Stage, float]]] = defaultdict(list)
    for d in deals:
        stage = stage_of(d)
        if stage is None:
            continue
        limit = stage.stall.long_stay_ratio or (
            rules.long_stay_ratio if stage.key in rules.long_stay_stages else None
        )
        days = _days(d.stage_entered_at, as_of)
        if limit is not None and days >= limit * stage.expected_days:
            found[stage.key].append((d, days, stage, limit))
    out = []
    for key, rows in found.items():
        longest = max(days for _, days, _, _ in rows)
        stage, limit = rows[0][2], rows[0][3]
        out.append(
            Finding(
                "too_long_in_stage",
                f"{len(rows)} deal{'s' if len(rows) != 1 else ''} in {key} past "
                f"{number(limit)}x its {stage.expected_days} expected days "
                f"(the longest {number(longest)} days).",
                {
                    "deals": len(rows),
                    "expected_days": stage.expected_days,
                    "ratio": limit,
                    "longest_days": round(longest, 2),
                },
                tuple(d.deal_id for d, *_ in rows),
                key,
            )
        )
    return out


def _stale(deals: Sequence[DealFacts], as_of: datetime, rules: HealthRules) -> list[Finding]:
    stale = [d for d in deals if _days(d.last_touch_at, as_of) >= rules.stale_days]
    share = _ratio(len(stale), len(deals))
    if not deals or share < rules.stale_share:
        return []
    return [
        Finding(
            "stale_pipeline",
            f"{len(stale)} of {len(deals)} open deals ({_pct(share)}) had no buyer activity or "
            f"evidence for {number(rules.stale_days)} days (limit {_pct(rules.stale_share)}).",
            {
                "stale_deals": len(stale),
                "open_deals": len(deals),
                "share": round(share, 4),
                "threshold_share": rules.stale_share,
                "threshold_days": rules.stale_days,
            },
            tuple(d.deal_id for d in stale),
        )
    ]


def _thin_early(
    deals: Sequence[DealFacts],
    pipeline_of: dict[UUID, Pipeline],
    history: History,
    rules: HealthRules,
) -> list[Finding]:
    conversion = history.early_conversion
    if conversion is None:
        return []  # nothing has closed yet: no history to judge by
    early = [d for d in deals if d.stage in pipeline_of[d.deal_id].stage_keys[: rules.early_stages]]
    value = sum((d.value for d in early), Decimal(0))
    expected = value * Decimal(str(conversion))
    if history.target is not None:
        benchmark = max(history.target - history.won_in_period, Decimal(0))
        against = "the remaining target"
    else:
        months = Decimal(str(rules.creation_window_days / 30))
        benchmark = history.created_value / months * Decimal(str(conversion))
        against = f"a typical month of new deals ({number(rules.creation_window_days)}-day average)"
    if expected >= benchmark:
        return []
    return [
        Finding(
            "thin_early_pipeline",
            f"Early stages hold {number(float(value))} which at the {_pct(conversion)} early-to-"
            f"won rate should win {number(float(expected))}, below {number(float(benchmark))}"
            f" for {against}.",
            {
                "early_value": _money(value),
                "early_to_won_rate": round(conversion, 4),
                "expected_won": _money(expected.quantize(Decimal("0.01"))),
                "benchmark": _money(benchmark.quantize(Decimal("0.01"))),
                "against": "target" if history.target is not None else "creation_rate",
            },
            tuple(d.deal_id for d in early),
        )
    ]


def _coverage(
    deals: Sequence[DealFacts],
    weighted: Callable[[DealFacts], Decimal],
    history: History,
    period: Period,
) -> list[Finding]:
    if history.target is None or history.win_rate in (None, 0.0):
        return []
    remaining = history.target - history.won_in_period
    if remaining <= 0:
        return []
    in_period = [d for d in deals if d.close_date is not None and d.close_date in period]
    pipeline = sum((weighted(d) for d in in_period), Decimal(0))
    coverage = float(pipeline / remaining)
    needed = 1 / float(history.win_rate or 1)
    if coverage >= needed:
        return []
    return [
        Finding(
            "coverage",
            f"Weighted pipeline closing in {period} ({number(float(pipeline))}) covers the "
            f"remaining target ({number(float(remaining))}) {number(coverage)}x; a "
            f"{_pct(history.win_rate or 0)} win rate needs {number(needed)}x.",
            {
                "period": str(period),
                "weighted_pipeline": _money(pipeline.quantize(Decimal("0.01"))),
                "target": _money(history.target),
                "won_in_period": _money(history.won_in_period),
                "remaining_target": _money(remaining),
                "coverage": round(coverage, 4),
                "win_rate": round(history.win_rate or 0, 4),
                "needed_coverage": round(needed, 4),
            },
            tuple(d.deal_id for d in in_period),
        )
    ]
