"""Pipeline red flags: is the pipeline as a whole healthy? Pure: figures summed over the
open deals (app.projections.pipeline_health sums them in SQL: this runs over every open
deal, and 100k deals in Python took over a second), the history figures and the time are
inputs. What each deal is held to comes from `stage_limits`.

Every threshold triggers *at* its value (a share of exactly 40 % is concentrated), so a
scripted dataset can sit on the boundary and a test can prove both sides of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from app.domain.explanations import number
from app.domain.periods import Period
from app.domain.pipeline import Catalog
from app.domain.pipeline_facts import History

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
class StageLimit:
    """What one stage of one pipeline version holds its open deals to."""

    pipeline_key: str
    pipeline_version: int
    stage: str
    probability: Decimal
    expected: timedelta
    """A deal here this long is aging."""
    long_after: timedelta | None
    """A deal here this long stays too long (None: the stage is not watched)."""
    long_ratio: float | None
    early: bool
    """Among the first `early_stages` stages of its pipeline version."""


def stage_limits(
    pipelines: Catalog, versions: Iterable[tuple[str, int]], rules: HealthRules
) -> list[StageLimit]:
    """Each stage of each of `versions` with what the rules hold its deals to."""
    limits = []
    for key, version in sorted(set(versions)):
        pipeline = pipelines.get(key, version)
        early = pipeline.stage_keys[: rules.early_stages]
        for stage in pipeline.stages:
            ratio = stage.stall.long_stay_ratio or (
                rules.long_stay_ratio if stage.key in rules.long_stay_stages else None
            )
            limits.append(
                StageLimit(
                    pipeline_key=key,
                    pipeline_version=version,
                    stage=stage.key,
                    probability=Decimal(str(stage.probability)),
                    expected=stage.expected_days * DAY,
                    long_after=ratio * stage.expected_days * DAY if ratio else None,
                    long_ratio=ratio,
                    early=stage.key in early,
                )
            )
    return limits


@dataclass(frozen=True)
class Found:
    """How many open deals a rule found, and the first of them (the most overdue first)."""

    count: int = 0
    ids: tuple[UUID, ...] = ()


@dataclass(frozen=True)
class StageFigures:
    """The open deals in one stage, whichever pipeline version they follow."""

    stage: str
    deals: Found
    """All of them, the longest in the stage first."""
    value: Decimal
    weighted: Decimal
    """Each deal's amount times its stage's probability (0 for a stage its version lacks)."""
    mean_age_days: float
    p90_age_days: float
    expected_days: int | None
    """The most any of their pipeline versions expects of the stage."""
    aging: Found
    """Those in the stage for at least their own version's expected days."""
    long: Found
    longest_days: float | None
    long_ratio: float | None
    long_expected_days: int | None


@dataclass(frozen=True)
class HealthFigures:
    """Sums over the open deals opened by `as_of`, and what each rule found among them."""

    as_of: datetime
    deals: int
    value: Decimal
    stages: list[StageFigures]
    versions: list[tuple[str, int]]
    """Their pipeline versions, by key and number."""
    stale: Found
    dead: Found
    early_value: Decimal
    early: Found
    """In an early stage of their pipeline version, the largest first."""
    period_weighted: Decimal
    in_period: Found
    """Closing in the period, the largest weighted amount first."""


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
    deals: Found = Found()
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


def _order(figures: HealthFigures, pipelines: Catalog) -> list[StageFigures]:
    """The stages as their pipeline versions order them; stages none of them has last."""
    order: list[str] = []
    for version in figures.versions:
        order += [k for k in pipelines.get(*version).stage_keys if k not in order]
    by_key = {s.stage: s for s in figures.stages}
    order += sorted(set(by_key) - set(order))
    return [by_key[k] for k in order if k in by_key]


def assess(
    figures: HealthFigures,
    pipelines: Catalog,
    history: History,
    period: Period,
    rules: HealthRules | None = None,
) -> Health:
    """The pipeline's red flags at `figures.as_of` over the open deals they sum up."""
    rules = rules or HealthRules()
    ordered = _order(figures, pipelines)
    stages = [
        StageHealth(
            stage=f.stage,
            deals=f.deals.count,
            value=f.value,
            weighted=f.weighted.quantize(Decimal("0.01")),
            deal_share=round(_ratio(f.deals.count, figures.deals), 4),
            value_share=round(_ratio(f.value, figures.value), 4),
            expected_days=f.expected_days,
            mean_age_days=round(f.mean_age_days, 2),
            p90_age_days=round(f.p90_age_days, 2),
        )
        for f in ordered
    ]
    hhi = round(herfindahl([f.value for f in ordered]), 4)
    findings: list[Finding] = []
    for f in ordered:
        deal_share = _ratio(f.deals.count, figures.deals)
        value_share = _ratio(f.value, figures.value)
        if max(deal_share, value_share) >= rules.concentration_share:
            findings.append(
                Finding(
                    "stage_concentration",
                    f"{f.stage.capitalize()} holds {_pct(deal_share)} of open deals and "
                    f"{_pct(value_share)} of their value (limit {_pct(rules.concentration_share)};"
                    f" Herfindahl index {hhi:.2f}).",
                    {
                        "deals": f.deals.count,
                        "deal_share": round(deal_share, 4),
                        "value": _money(f.value),
                        "value_share": round(value_share, 4),
                        "threshold_share": rules.concentration_share,
                        "herfindahl": hhi,
                    },
                    f.deals,
                    f.stage,
                )
            )
        if f.expected_days is not None and f.mean_age_days >= f.expected_days:
            mean, p90 = round(f.mean_age_days, 2), round(f.p90_age_days, 2)
            findings.append(
                Finding(
                    "aging",
                    f"Deals in {f.stage} have been there {number(mean)} days on average (p90"
                    f" {number(p90)}), against {f.expected_days} expected.",
                    {"mean_age_days": mean, "p90_age_days": p90, "expected_days": f.expected_days},
                    f.aging,
                    f.stage,
                )
            )
    findings += _long_stays(ordered)
    findings += _stale(figures, rules)
    if figures.dead.count:
        count = figures.dead.count
        findings.append(
            Finding(
                "dead_leads",
                f"{count} open deal{'s' if count != 1 else ''} had no buyer touch for "
                f"{number(rules.dead_days)}+ days and no next step: disqualify or nurture them.",
                {"deals": count, "threshold_days": rules.dead_days},
                figures.dead,
            )
        )
    findings += _thin_early(figures, history, rules)
    findings += _coverage(figures, history, period)
    return Health(
        open_deals=figures.deals,
        open_value=figures.value,
        herfindahl=hhi,
        stages=stages,
        findings=findings,
    )


def _long_stays(ordered: Sequence[StageFigures]) -> list[Finding]:
    out = []
    for f in ordered:
        count = f.long.count
        if not count or f.long_ratio is None or f.longest_days is None:
            continue
        out.append(
            Finding(
                "too_long_in_stage",
                f"{count} deal{'s' if count != 1 else ''} in {f.stage} past "
                f"{number(f.long_ratio)}x its {f.long_expected_days} expected days "
                f"(the longest {number(f.longest_days)} days).",
                {
                    "deals": count,
                    "expected_days": f.long_expected_days,
                    "ratio": f.long_ratio,
                    "longest_days": round(f.longest_days, 2),
                },
                f.long,
                f.stage,
            )
        )
    return out


def _stale(figures: HealthFigures, rules: HealthRules) -> list[Finding]:
    stale, deals = figures.stale.count, figures.deals
    share = _ratio(stale, deals)
    if not deals or share < rules.stale_share:
        return []
    return [
        Finding(
            "stale_pipeline",
            f"{stale} of {deals} open deals ({_pct(share)}) had no buyer activity or "
            f"evidence for {number(rules.stale_days)} days (limit {_pct(rules.stale_share)}).",
            {
                "stale_deals": stale,
                "open_deals": deals,
                "share": round(share, 4),
                "threshold_share": rules.stale_share,
                "threshold_days": rules.stale_days,
            },
            figures.stale,
        )
    ]


def _thin_early(figures: HealthFigures, history: History, rules: HealthRules) -> list[Finding]:
    conversion = history.early_conversion
    if conversion is None:
        return []  # nothing has closed yet: no history to judge by
    value = figures.early_value
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
            figures.early,
        )
    ]


def _coverage(figures: HealthFigures, history: History, period: Period) -> list[Finding]:
    if history.target is None or history.win_rate in (None, 0.0):
        return []
    remaining = history.target - history.won_in_period
    if remaining <= 0:
        return []
    pipeline = figures.period_weighted
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
            figures.in_period,
        )
    ]
