"""Forecast accuracy through HTTP: the weighted forecast replayed at the snapshot against
the amounts won, per owner and overall, with hand-computed figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.domain.periods import Period
from tests.api.conftest import MANAGER, Deals

SPONSOR = {"name": "Eve", "role": "economic_buyer"}
DAY = timedelta(days=1)


async def walk(deals: Deals, deal_id: str, *stages: str) -> None:
    for stage in stages:
        body = {"to_stage": stage, "override": {"reason": "scripted"}}
        assert (await deals.command(deal_id, "advance", body, headers=MANAGER)).status_code == 200


async def opened(deals: Deals, owner: str, amount: str, close: str, *stages: str) -> str:
    deal = (await deals.open(owner=owner, amount=amount, close_date=close))["id"]
    assert (await deals.command(deal, "stakeholders", SPONSOR)).status_code == 201
    await walk(deals, deal, *stages)
    return str(deal)


async def test_accuracy_and_bias_per_owner_and_overall(deals: Deals) -> None:
    period = Period.quarter_of(datetime.now(UTC).date())
    close = (period.end - DAY).date().isoformat()
    a = await opened(deals, "rick", "10000", close, "qualification", "proposal", "negotiation")
    await opened(deals, "rick", "20000", close)  # discovery: 10 %
    c = await opened(deals, "sam", "50000", close, "qualification", "proposal")
    await opened(deals, "rick", "99999", "2099-01-01", "qualification")  # closes later
    snapshot = datetime.fromisoformat((await deals.get(c))["stage_entered_at"])
    win = {"override": {"reason": "signed"}}
    await walk(deals, a, "closing")
    assert (await deals.command(a, "win", win, headers=MANAGER)).status_code == 200
    await walk(deals, c, "negotiation", "closing")
    assert (await deals.command(c, "win", win, headers=MANAGER)).status_code == 200

    days = (period.end - snapshot) / DAY
    response = await deals.client.get(
        "/v1/analytics/forecast-accuracy",
        params=deals.fresh(period=str(period), snapshot_days_before_end=days, periods=2),
        headers=MANAGER,
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    this = found["periods"][0]
    assert this["period"] == str(period)
    # At the snapshot: rick 10000 x .75 + 20000 x .10 = 9500; sam 50000 x .50 = 25000.
    # Won in the period: rick 10000, sam 50000.
    owners = {o["owner"]: o for o in this["owners"]}
    assert owners["rick"] == {
        "owner": "rick",
        "forecast": "9500.00",
        "won": "10000",
        "accuracy": 1 - 500 / 10000,
        "bias": -500 / 10000,
    }
    assert (owners["sam"]["accuracy"], owners["sam"]["bias"]) == (0.5, -0.5)
    overall = this["overall"]
    assert (overall["forecast"], overall["won"]) == ("34500.00", "60000")
    assert overall["accuracy"] == 1 - 25500 / 60000
    assert overall["bias"] == -25500 / 60000
    # The quarter before won nothing: no accuracy there, and MAPE is over this one alone.
    assert found["periods"][1]["overall"]["accuracy"] is None
    assert found["mape"] == 25500 / 60000

    bad = await deals.client.get(
        "/v1/analytics/forecast-accuracy", params={"period": "Q3"}, headers=MANAGER
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
