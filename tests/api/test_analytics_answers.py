"""Analytics that answered wrong: stage order, regressions counted the same way everywhere,
overdue deals out of the forecast, who overrode, the size band on blockers, a zero median."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from tests.api.conftest import MANAGER, REP, Deals
from tests.keys import KEYS


async def manager_read(deals: Deals, client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await client.get(url, params=deals.fresh(**params), headers=MANAGER)
    assert response.status_code == 200, response.text
    return response.json()


async def walked_to_negotiation(deals: Deals) -> str:
    """A deal moved discovery -> qualification -> proposal -> negotiation on overrides."""
    deal = (await deals.open(amount="30000", currency="EUR", close_date="2027-06-30"))["id"]
    sponsor = {"name": "Eve", "role": "economic_buyer"}
    assert (await deals.command(deal, "stakeholders", sponsor)).status_code == 201
    for stage in ("qualification", "proposal", "negotiation"):
        body = {"to_stage": stage, "override": {"reason": "board deal"}}
        moved = await deals.command(deal, "advance", body, headers=MANAGER)
        assert moved.status_code == 200, moved.text
    return str(deal)


async def test_stage_rows_come_in_pipeline_order(deals: Deals, client: httpx.AsyncClient) -> None:
    await walked_to_negotiation(deals)
    timing = await manager_read(deals, client, "/v1/analytics/time-in-stage")
    assert [row["stage"] for row in timing["overall"]] == ["discovery", "qualification", "proposal"]
    regressions = await manager_read(deals, client, "/v1/analytics/regressions")
    assert [row["stage"] for row in regressions] == ["discovery", "qualification", "proposal"]


async def test_overrides_name_the_manager_and_role(deals: Deals, client: httpx.AsyncClient) -> None:
    await walked_to_negotiation(deals)
    rows = await manager_read(deals, client, "/v1/analytics/overrides")
    manager = KEYS["manager"]
    assert {(r["manager"], r["manager_name"], r["manager_role"]) for r in rows} == {
        (str(manager.key_id), manager.name, "manager")
    }


async def test_conversion_counts_every_regression_as_the_regressions_view_does(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = (await deals.open(amount="5000", close_date="2027-06-30"))["id"]
    back = {"to_stage": "discovery", "trigger": "decision_maker_pushed_back"}
    forward = {"to_stage": "qualification", "override": {"reason": "try again"}}
    for _ in range(2):
        assert (await deals.command(deal, "advance", forward, headers=MANAGER)).is_success
        assert (await deals.command(deal, "regress", back)).is_success
    assert (await deals.command(deal, "advance", forward, headers=MANAGER)).is_success
    conversion = await manager_read(deals, client, "/v1/analytics/conversion")
    regressions = await manager_read(deals, client, "/v1/analytics/regressions")
    by_stage = {row["stage"]: row["regressed"] for row in conversion}
    assert by_stage["qualification"] == 2
    assert {row["stage"]: row["regressed"] for row in regressions}["qualification"] == 2


async def test_the_forecast_shows_deals_past_their_close_month_as_overdue(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    await deals.open(name="Stale", amount="10000", currency="EUR", close_date="2026-01-15")
    await deals.open(name="Live", amount="20000", currency="EUR", close_date="2099-01-15")
    forecast = await manager_read(deals, client, "/v1/analytics/forecast")
    rows = {row["close_month"]: row for row in forecast["rows"]}
    assert rows["overdue"]["overdue"] is True and rows["overdue"]["weighted"] == "0.00"
    assert "2026-01" not in rows
    assert rows["2099-01"]["weighted"] == "2000.00"  # 10 % in discovery
    assert forecast["total_weighted"] == {"EUR": "2000.00"}
    assert forecast["overdue_amount"] == {"EUR": "10000"}


async def test_blockers_honour_the_size_band_and_a_zero_median_is_zero(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    small = (await deals.open(name="Small", amount="5000"))["id"]
    large = (await deals.open(name="Large", amount="500000"))["id"]
    for deal in (small, large):
        raised = await deals.command(
            deal, "blockers", {"category": "risk_aversion", "description": "?"}, headers=REP
        )
        assert raised.status_code == 201
    banded = await manager_read(deals, client, "/v1/analytics/blockers", size_band="<10000")
    assert [(row["category"], row["open"]) for row in banded] == [("risk_aversion", 1)]

    # A blocker resolved the instant it was raised (a median of exactly 0 days).
    await pg.execute(
        "INSERT INTO blocker_log (blocker_id, deal_id, category, raised_at, resolved_at)"
        " VALUES ($1, $2, 'budget_uncertainty', now(), now())",
        uuid.uuid4(),
        uuid.UUID(small),
    )
    rows = await manager_read(deals, client, "/v1/analytics/blockers")
    budget = next(row for row in rows if row["category"] == "budget_uncertainty")
    assert budget["median_days_to_resolve"] == 0.0
