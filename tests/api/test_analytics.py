"""Analytics over a generated pipeline equal the figures computed here, independently, from
the raw events in the log."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from app.domain.pipeline import DEFAULT_PIPELINE
from app.events.store import EventStore
from app.service.deals import DealService
from app.service.simulation import run_workload
from tests.api.conftest import MANAGER, Deals

DAY = 86_400.0


@dataclass
class Stay:
    deal: str
    stage: str
    entered: datetime
    owner: str
    amount: Decimal | None
    left: datetime | None = None
    how: str | None = None
    reason: str | None = None
    override_by: str | None = None


@dataclass
class Log:
    stays: list[Stay]
    blockers: dict[str, tuple[str, bool]]  # id -> (category, resolved)
    deals: dict[str, dict[str, Any]]  # the final facts the forecast needs


async def replay_by_hand(pg: asyncpg.Connection) -> Log:
    rows = await pg.fetch(
        "SELECT stream_id::text AS deal, type, data::text AS data, recorded_at FROM events"
        " ORDER BY stream_id, version"
    )
    stays: list[Stay] = []
    current: dict[str, Stay] = {}
    blockers: dict[str, tuple[str, bool]] = {}
    deals: dict[str, dict[str, Any]] = {}
    hows = {
        "StageAdvanced": "advanced",
        "StageRegressed": "regressed",
        "DealReactivated": "reactivated",
        "DealNurtured": "nurtured",
        "DealWon": "won",
        "DealDisqualified": "disqualified",
    }
    for r in rows:
        deal, kind, at = r["deal"], r["type"], r["recorded_at"]
        data = json.loads(r["data"])
        facts = deals.setdefault(deal, {})
        stay = current.get(deal)
        if kind == "DealOpened":
            amount = Decimal(data["amount"]) if data.get("amount") is not None else None
            facts.update(
                owner=data["owner"],
                amount=amount,
                currency=data.get("currency"),
                close_date=data.get("close_date"),
                stage=data["stage"],
                status="open",
            )
            current[deal] = Stay(deal, data["stage"], at, data["owner"], amount)
            stays.append(current[deal])
        elif kind == "OwnerAssigned":
            facts["owner"] = data["owner"]
            if stay is not None:
                stay.owner = data["owner"]
        elif kind == "AmountChanged":
            amount = Decimal(data["amount"]) if data.get("amount") is not None else None
            facts.update(amount=amount, currency=data.get("currency"))
            if stay is not None:
                stay.amount = amount
        elif kind == "CloseDateChanged":
            facts["close_date"] = data.get("close_date")
        elif kind in hows:
            assert stay is not None
            stay.left, stay.how = at, hows[kind]
            stay.reason = (
                data.get("trigger") or data.get("reason")
                if kind
                in (
                    "StageRegressed",
                    "DealDisqualified",
                )
                else None
            )
            override = data.get("override")
            stay.override_by = override["by"] if override else None
            if kind in ("DealWon", "DealDisqualified"):
                facts["status"] = hows[kind]
                del current[deal]
                continue
            stage = "nurture" if kind == "DealNurtured" else data["to_stage"]
            facts["stage"] = stage
            facts["status"] = "nurture" if kind == "DealNurtured" else "open"
            current[deal] = Stay(deal, stage, at, stay.owner, stay.amount)
            stays.append(current[deal])
        elif kind == "BlockerRaised":
            blockers[data["blocker_id"]] = (data["category"], False)
        elif kind == "BlockerResolved":
            blockers[data["blocker_id"]] = (blockers[data["blocker_id"]][0], True)
    return Log(stays, blockers, deals)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    position = 0.9 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.fixture
async def dataset(store: EventStore, deals: Deals, pg: asyncpg.Connection) -> Log:
    workload = await run_workload(DealService(store), deals=60, commands=1300, seed=42)
    deals.position = workload.last_position
    return await replay_by_hand(pg)


async def analytics(deals: Deals, name: str, **params: Any) -> Any:
    response = await deals.client.get(
        f"/v1/analytics/{name}", params=deals.fresh(**params), headers=MANAGER
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_time_in_stage_matches_the_log(deals: Deals, dataset: Log) -> None:
    owner = "ann.rep"
    for params, keep in (({}, lambda s: True), ({"owner": owner}, lambda s: s.owner == owner)):
        expected: dict[str, list[float]] = defaultdict(list)
        for stay in dataset.stays:
            if stay.left is not None and keep(stay):
                expected[stay.stage].append((stay.left - stay.entered).total_seconds() / DAY)
        got = {
            d["stage"]: d for d in (await analytics(deals, "time-in-stage", **params))["overall"]
        }
        assert set(got) == set(expected)
        for stage, days in expected.items():
            assert got[stage]["count"] == len(days)
            assert got[stage]["mean_days"] == pytest.approx(statistics.fmean(days), abs=1e-3)
            assert got[stage]["median_days"] == pytest.approx(statistics.median(days), abs=1e-3)
            assert got[stage]["p90_days"] == pytest.approx(p90(days), abs=1e-3)
    by_owner = (await analytics(deals, "time-in-stage"))["by_owner"]
    counts = Counter((s.stage, s.owner) for s in dataset.stays if s.left is not None)
    assert {(d["stage"], d["group"]): d["count"] for d in by_owner} == dict(counts)

    weekly: dict[tuple[str, str], list[Stay]] = defaultdict(list)
    for stay in dataset.stays:
        if stay.left is not None:
            monday = stay.left.date() - timedelta(days=stay.left.weekday())
            weekly[(monday.isoformat(), stay.stage)].append(stay)
    points = {(p["week"], p["stage"]): p for p in await analytics(deals, "velocity")}
    assert set(points) == set(weekly)
    for key, stays in weekly.items():
        days = [(s.left - s.entered).total_seconds() / DAY for s in stays if s.left]
        assert points[key]["median_days"] == pytest.approx(statistics.median(days), abs=1e-3)
        assert points[key]["advanced"] == sum(s.how in ("advanced", "won") for s in stays)


async def test_conversion_matches_the_log(deals: Deals, dataset: Log) -> None:
    last: dict[tuple[str, str], Stay] = {}
    for stay in dataset.stays:
        last[(stay.deal, stay.stage)] = stay  # stays are in order per deal
    won = {s.deal for s in dataset.stays if s.how == "won"}
    expected: dict[str, Counter[str]] = defaultdict(Counter)
    for (deal, stage), stay in last.items():
        outcome = {
            "advanced": "moved_forward",
            "won": "moved_forward",
            "regressed": "regressed",
            "disqualified": "disqualified",
            "nurtured": "nurtured",
            "reactivated": "nurtured",
            None: "still_there",
        }[stay.how]
        if outcome != "regressed":
            expected[stage][outcome] += 1
        expected[stage]["entered"] += 1
        expected[stage]["won"] += deal in won
    # Regressions count every stay that ended in one, as /analytics/regressions does.
    for stay in dataset.stays:
        expected[stay.stage]["regressed"] += stay.how == "regressed"
    got = {row["stage"]: row for row in await analytics(deals, "conversion")}
    assert set(got) == set(expected)
    for stage, counts in expected.items():
        for field in ("entered", "moved_forward", "regressed", "disqualified", "still_there"):
            assert got[stage][field] == counts[field], (stage, field)
        assert got[stage]["won"] == counts["won"]
        assert got[stage]["to_won_rate"] == round(counts["won"] / counts["entered"], 4)
    assert got["discovery"]["entered"] == 60  # every deal starts there
    assert sum(r["won"] for r in got.values() if r["stage"] == "closing") == len(
        {s.deal for s in dataset.stays if s.stage == "closing" and s.deal in won}
    )


async def test_regressions_disqualifications_and_overrides_match_the_log(
    deals: Deals, dataset: Log
) -> None:
    closed = [s for s in dataset.stays if s.left is not None]
    triggers: dict[str, Counter[str]] = defaultdict(Counter)
    for s in closed:
        if s.how == "regressed":
            triggers[s.stage][s.reason or ""] += 1
    got = {r["stage"]: r for r in await analytics(deals, "regressions")}
    assert triggers, "the dataset should hold regressions"
    for stage, counts in triggers.items():
        assert got[stage]["by_trigger"] == dict(counts)
        finished = sum(1 for s in closed if s.stage == stage)
        assert got[stage]["rate"] == round(sum(counts.values()) / finished, 4)

    out = [s for s in closed if s.how == "disqualified"]
    dq = await analytics(deals, "disqualifications")
    assert dq["total"] == len(out) > 0
    assert dq["by_reason"] == dict(Counter(s.reason for s in out))
    assert dq["by_stage"] == dict(Counter(s.stage for s in out))

    forced = Counter((s.override_by, s.stage) for s in closed if s.override_by)
    got_overrides = {
        (r["manager"], r["stage"]): r["overrides"] for r in await analytics(deals, "overrides")
    }
    assert got_overrides == dict(forced)


async def test_blockers_and_forecast_match_the_log(deals: Deals, dataset: Log) -> None:
    expected_blockers: dict[str, Counter[str]] = defaultdict(Counter)
    for category, resolved in dataset.blockers.values():
        expected_blockers[category]["resolved" if resolved else "open"] += 1
    got = {r["category"]: r for r in await analytics(deals, "blockers")}
    assert {c: (r["open"], r["resolved"]) for c, r in got.items()} == {
        c: (n["open"], n["resolved"]) for c, n in expected_blockers.items()
    }

    sums: dict[tuple[str | None, str], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for facts in dataset.deals.values():
        if facts["status"] != "open" or facts["amount"] is None:
            continue
        probability = Decimal(str(DEFAULT_PIPELINE.stage(facts["stage"]).probability))
        month = facts["close_date"][:7] if facts["close_date"] else None
        entry = sums[(month, facts["owner"])]
        entry[0] += 1
        entry[1] += facts["amount"]
        entry[2] += facts["amount"] * probability
    forecast = await analytics(deals, "forecast")
    rows = {(r["close_month"], r["owner"]): r for r in forecast["rows"]}
    assert set(rows) == set(sums)
    for key, (n, amount, weighted) in sums.items():
        assert rows[key]["deals"] == n
        assert Decimal(rows[key]["amount"]) == amount
        assert Decimal(rows[key]["weighted"]) == weighted.quantize(Decimal("0.01"))
    # Now is summed in SQL, a past time from replayed states: the two agree on the same log.
    replayed = await analytics(deals, "forecast", as_of=datetime.now().astimezone().isoformat())
    assert replayed["rows"] == forecast["rows"]
    assert replayed["total_weighted"] == forecast["total_weighted"]


async def test_forecast_as_of_shows_what_it_said_then(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    first = await deals.open(amount="10000", currency="USD", close_date="2027-01-15")
    then = datetime.now().astimezone()
    before = await analytics(deals, "forecast")
    await deals.open(amount="5000", currency="USD", close_date="2027-01-20")
    disqualified = await deals.command(first["id"], "disqualify", {"reason": "cannot_afford"})
    assert disqualified.status_code == 200
    now = await analytics(deals, "forecast")
    assert now["total_weighted"] == {"USD": "500.00"}
    replayed = await analytics(deals, "forecast", as_of=then.isoformat())
    assert replayed["rows"] == before["rows"]
    assert replayed["total_weighted"] == {"USD": "1000.00"}


async def test_analytics_filters_and_roles(deals: Deals, client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/analytics/conversion")).status_code == 403  # a rep's key
    bad = await client.get(
        "/v1/analytics/conversion", params={"size_band": "huge"}, headers=MANAGER
    )
    assert bad.status_code == 422 and "10000-50000" in bad.json()["detail"]
    unknown = await client.get(
        "/v1/analytics/velocity", params={"pipeline": "enterprise"}, headers=MANAGER
    )
    assert unknown.status_code == 422 and "default" in unknown.json()["detail"]
    bands = (await client.get("/v1/analytics/size-bands", headers=MANAGER)).json()
    assert bands == ["<10000", "10000-50000", "50000-250000", "250000+", "unknown"]
    await deals.open(amount="20000")
    await deals.open(amount="900")
    mid = await analytics(deals, "conversion", size_band="10000-50000")
    assert [(r["stage"], r["entered"]) for r in mid] == [("discovery", 1)]
