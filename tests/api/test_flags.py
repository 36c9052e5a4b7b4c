"""Velocity flags through HTTP: exact numbers at chosen times, time alone raising them,
events clearing them, and ghosting judged against each deal's own rhythm."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.api.conftest import MANAGER, REP, Deals
from tests.keys import KEYS
from tests.support import app_client

DAY = timedelta(days=1)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


async def flags_at(deals: Deals, deal_id: str, when: datetime) -> dict[str, dict[str, Any]]:
    found = await deals.read(f"/v1/deals/{deal_id}/flags", as_of=when.isoformat())
    return {flag["kind"]: flag for flag in found["flags"]}


async def test_a_scripted_deal_has_exactly_the_hand_computed_flags(deals: Deals) -> None:
    deal = await deals.open(amount="20000", currency="USD", close_date="2099-01-01")
    entered = ts(deal["stage_entered_at"])
    due = date.fromisoformat(deal["next_step"]["due_date"])
    assert due == entered.date() + timedelta(days=3)  # the discovery template
    close = entered.date() + timedelta(days=30)
    patched = await deals.client.patch(
        f"/v1/deals/{deal['id']}", json={"close_date": close.isoformat()}, headers=REP
    )
    assert patched.status_code == 200
    deals.saw(patched)

    assert await flags_at(deals, deal["id"], entered + 2 * DAY) == {}

    at = entered + 8 * DAY
    found = await flags_at(deals, deal["id"], at)
    assert set(found) == {"inactive", "next_step_overdue"}
    assert ts(found["inactive"]["raised_at"]) == entered + 7 * DAY
    assert found["inactive"]["numbers"]["days_without_buyer_activity"] == 8.0
    assert found["inactive"]["severity"] == "warning"
    overdue_from = midnight(due + DAY)
    assert ts(found["next_step_overdue"]["raised_at"]) == overdue_from
    assert found["next_step_overdue"]["numbers"]["days_overdue"] == round(
        (at - overdue_from) / DAY, 2
    )
    assert found["next_step_overdue"]["severity"] == "warning"

    at = entered + 15 * DAY
    found = await flags_at(deals, deal["id"], at)
    assert set(found) == {"slow_in_stage", "inactive", "next_step_overdue"}
    slow = found["slow_in_stage"]
    assert slow["severity"] == "critical"  # 15 days >= 2 x 7
    assert slow["numbers"] == {"days_in_stage": 15.0, "expected_days": 7, "ratio": 2.14}
    assert slow["explanation"] == "In discovery for 15 days, 2.1x the 7 days expected."
    assert ts(slow["raised_at"]) == entered + 10.5 * DAY
    assert found["next_step_overdue"]["severity"] == "critical"  # a week past due

    at = entered + 32 * DAY
    found = await flags_at(deals, deal["id"], at)
    assert "close_date_passed" in found
    assert ts(found["close_date_passed"]["raised_at"]) == midnight(close + DAY)
    assert found["close_date_passed"]["numbers"]["close_date"] == close.isoformat()

    # Conditions end: the step done, a new one due. (Activity from the future, which once
    # ended `inactive` here, is refused now; the rule's end is in tests/unit/test_flag_rules.)
    assert (await deals.command(deal["id"], "next-step/complete")).status_code == 200
    found = await flags_at(deals, deal["id"], at)
    assert "next_step_overdue" not in found
    assert "no_next_step" in found  # completed, nothing next: that is a flag too
    step = {"description": "Send the pilot plan", "due_date": (close + 60 * DAY).isoformat()}
    response = await deals.client.put(f"/v1/deals/{deal['id']}/next-step", json=step, headers=REP)
    deals.saw(response)
    found = await flags_at(deals, deal["id"], at)
    assert set(found) == {"slow_in_stage", "close_date_passed", "inactive"}


async def test_ghosting_is_judged_against_the_deals_own_rhythm(deals: Deals) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    daily = await deals.open(name="Daily cadence")
    weekly = await deals.open(name="Weekly cadence")
    for i in range(10, 0, -1):
        body = {"type": "email_replied", "occurred_at": (now - i * DAY).isoformat()}
        assert (await deals.command(daily["id"], "activities", body)).status_code == 201
    for i in range(6, 0, -1):
        body = {"type": "meeting_held", "occurred_at": (now - DAY - 7 * (i - 1) * DAY).isoformat()}
        assert (await deals.command(weekly["id"], "activities", body)).status_code == 201
    four_days_silent = now + 3 * DAY  # both last heard from the buyer at now - 1 day
    ghosted = await flags_at(deals, daily["id"], four_days_silent)
    assert "ghosting" in ghosted
    assert ghosted["ghosting"]["numbers"]["median_gap_days"] == 1.0
    assert ghosted["ghosting"]["numbers"]["threshold_days"] == 3.0
    assert ghosted["ghosting"]["numbers"]["silent_days"] == 4.0
    assert ts(ghosted["ghosting"]["raised_at"]) == now - DAY + 3 * DAY
    assert "ghosting" not in await flags_at(deals, weekly["id"], four_days_silent)
    # The weekly buyer is ghosting only past 3 x 7 days of silence.
    assert "ghosting" in await flags_at(deals, weekly["id"], now - DAY + 22 * DAY)


@pytest.fixture
async def quick(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with thresholds in seconds, so a test can watch time raise a flag."""
    seconds = 1 / 86_400
    settings = Settings(
        inactive_days=1.5 * seconds,
        slow_warning_ratio=1.5 * seconds / 7,  # discovery expects 7 days
        slow_critical_ratio=1000,
        flag_sweep_seconds=0.2,
    )
    async with app_client(database_url, settings) as http:
        yield http


async def open_flags(client: httpx.AsyncClient, deal_id: str) -> dict[str, dict[str, Any]]:
    flags = (await client.get(f"/v1/deals/{deal_id}/flags")).json()["flags"]
    return {f["kind"]: f for f in flags if f["cleared_at"] is None}


async def test_time_alone_raises_flags_and_events_clear_them(quick: httpx.AsyncClient) -> None:
    deals = Deals(quick)
    deal = await deals.open(amount="5000", close_date="2099-01-01")
    await deals.read(f"/v1/deals/{deal['id']}/flags")  # projected: nothing yet
    assert await open_flags(quick, deal["id"]) == {}

    # No event for this deal: the projector's periodic sweep raises them as time passes.
    deadline = asyncio.get_running_loop().time() + 15
    while set(await open_flags(quick, deal["id"])) != {"inactive", "slow_in_stage"}:
        assert asyncio.get_running_loop().time() < deadline, await open_flags(quick, deal["id"])
        await asyncio.sleep(0.2)

    activity = {"type": "call_held", "occurred_at": datetime.now(UTC).isoformat()}
    logged = await deals.command(deal["id"], "activities", activity)
    await deals.make_ready_for(deal["id"], "discovery")
    advanced = await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
    assert advanced.status_code == 200
    history = (await deals.read(f"/v1/deals/{deal['id']}/flags"))["flags"]
    cleared = {f["kind"]: f for f in history if f["cleared_at"] is not None}
    assert {"inactive", "slow_in_stage"} <= set(cleared)
    moments = {
        e["position"]: e["recorded_at"]
        for e in (await deals.read(f"/v1/deals/{deal['id']}/history", limit=500))["items"]
    }
    assert ts(cleared["inactive"]["cleared_at"]) == ts(moments[logged.json()["position"]])
    assert ts(cleared["slow_in_stage"]["cleared_at"]) == ts(moments[advanced.json()["position"]])


async def test_team_flag_list_filters_and_needs_a_team_role(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    mine = await deals.open(name="Mine", owner="ann")
    theirs = await deals.open(name="Theirs", owner="bob")
    overdue = {"description": "Send pricing", "due_date": "2020-01-01"}
    for deal in (mine, theirs):
        response = await client.put(f"/v1/deals/{deal['id']}/next-step", json=overdue)
        deals.saw(response)
    later = (datetime.now(UTC) + 40 * DAY).isoformat()
    assert (await client.get("/v1/flags")).status_code == 403  # a rep's key

    def listed(**params: Any) -> Any:
        return client.get("/v1/flags", params=deals.fresh(**params), headers=MANAGER)

    page = (await listed(kind="next_step_overdue", owner="ann")).json()
    assert [(f["deal_name"], f["severity"]) for f in page["items"]] == [("Mine", "critical")]
    future = (await listed(as_of=later, owner="bob", severity="critical")).json()["items"]
    assert {f["kind"] for f in future} == {"slow_in_stage", "next_step_overdue"}
    assert all(f["deal_name"] == "Theirs" for f in future)

    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        params = {"as_of": later, "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await listed(**params)).json()
        seen += [(f["deal_id"], f["kind"]) for f in body["items"]]
        if not (cursor := body["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 6
    auditor = await client.get("/v1/flags", headers=KEYS["auditor"].headers)
    assert auditor.status_code == 200
