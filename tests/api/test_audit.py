"""Auditors through HTTP: stage history, provenance, as-of replay, verification, lag."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from app.settings import Settings
from tests.api.conftest import MANAGER, REP, Deals, criteria_of
from tests.keys import KEYS
from tests.support import app_client

REP_ACTOR = {"id": str(KEYS["rep"].key_id), "name": "rick.rep", "role": "rep"}
READY = {"amount": "40000", "currency": "USD", "close_date": "2027-03-01"}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def history_of(deals: Deals, deal_id: str) -> list[dict[str, Any]]:
    return list((await deals.read(f"/v1/deals/{deal_id}/history", limit=500))["items"])


async def test_stage_durations_follow_the_recorded_stage_changes(deals: Deals) -> None:
    deal = await deals.open(**READY)
    deal_id = deal["id"]
    steps: list[tuple[str, dict[str, Any]]] = [
        ("advance", {"to_stage": "qualification"}),
        ("regress", {"to_stage": "discovery", "trigger": "decision_maker_pushed_back"}),
        ("advance", {"to_stage": "qualification"}),
        ("nurture", {"reason": "budget freeze", "resume_on": "2027-01-15"}),
        ("reactivate", {}),
        ("disqualify", {"reason": "chose_competitor"}),
    ]
    await deals.make_ready_for(deal_id, "discovery")
    for action, body in steps:
        await asyncio.sleep(0.02)  # durations measurably above zero
        response = await deals.command(deal_id, action, body)
        assert response.status_code == 200, response.text

    changes = [
        e
        for e in await history_of(deals, deal_id)
        if e["type"]
        in (
            "DealOpened",
            "StageAdvanced",
            "StageRegressed",
            "DealNurtured",
            "DealReactivated",
            "DealDisqualified",
        )
    ]
    at = [ts(e["recorded_at"]) for e in changes]
    expected = [
        ("discovery", at[0], at[1], "advanced"),
        ("qualification", at[1], at[2], "regressed"),
        ("discovery", at[2], at[3], "advanced"),
        ("qualification", at[3], at[4], "nurtured"),
        ("nurture", at[4], at[5], "reactivated"),
        ("qualification", at[5], at[6], "disqualified"),
    ]
    history = await deals.read(f"/v1/deals/{deal_id}/stage-history")
    got = history["intervals"]
    assert [
        (i["stage"], ts(i["entered_at"]), ts(i["left_at"]), i["left_how"]) for i in got
    ] == expected
    for interval, (_, entered, left, _) in zip(got, expected, strict=True):
        seconds = (left - entered).total_seconds()
        assert interval["duration_seconds"] == pytest.approx(seconds, abs=1e-6)
        assert interval["duration_seconds"] > 0
        assert interval["duration_days"] == pytest.approx(seconds / 86_400, abs=1e-4)
        assert interval["current"] is False


async def test_the_current_stay_counts_until_now(deals: Deals) -> None:
    deal = await deals.open()
    before = datetime.now(UTC)
    (interval,) = (await deals.read(f"/v1/deals/{deal['id']}/stage-history"))["intervals"]
    assert interval["stage"] == "discovery" and interval["current"] is True
    assert interval["left_at"] is None
    assert interval["duration_seconds"] >= (before - ts(interval["entered_at"])).total_seconds()


async def test_provenance_lists_the_evidence_that_met_each_criterion_then(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open(**READY)
    deal_id = deal["id"]
    budget, dm, pain, timeline = criteria_of("discovery")
    withdrawn = await deals.evidence(deal_id, budget)
    retracted = await deals.command(
        deal_id, f"evidence/{withdrawn}/retract", {"reason": "it was another account"}
    )
    assert retracted.status_code == 200
    budget_ok = await deals.evidence(deal_id, budget, kind="email")
    both = await deals.evidence(deal_id, dm, pain)
    timeline_ok = await deals.evidence(deal_id, timeline, kind="call_recording")
    assert (await deals.command(deal_id, "advance", {"to_stage": "qualification"})).is_success
    # Retracted after the advance: the auditor still sees it, marked as retracted later.
    later = await deals.command(deal_id, f"evidence/{budget_ok}/retract", {"reason": "misheard"})
    assert later.status_code == 200

    found = await deals.read(f"/v1/deals/{deal_id}/provenance", stage="qualification")
    (entry,) = found["entries"]
    assert entry["event_type"] == "StageAdvanced"
    assert entry["from_stage"] == "discovery" and entry["actor"] == REP_ACTOR
    assert entry["override"] is None and entry["pipeline_version"] == 1
    ids = {key: [item["evidence_id"] for item in items] for key, items in entry["criteria"].items()}
    assert ids == {budget: [budget_ok], dm: [both], pain: [both], timeline: [timeline_ok]}
    budget_item = entry["criteria"][budget][0]
    assert budget_item["kind"] == "email"
    assert budget_item["recorded_by"] == REP_ACTOR
    assert budget_item["source"]["system"] == "gmail" and budget_item["source"]["ref"] == "msg-1"
    assert budget_item["retracted_later"]["reason"] == "misheard"
    assert budget_item["retracted_later"]["by"] == REP_ACTOR
    assert entry["criteria"][timeline][0]["retracted_later"] is None
    assert ts(budget_item["recorded_at"]) < ts(entry["recorded_at"])

    # An override shows as one: who, why, and no evidence behind it.
    buyer = {"name": "Erin Buyer", "role": "economic_buyer"}
    assert (await deals.command(deal_id, "stakeholders", buyer)).status_code == 201
    override = {"to_stage": "proposal", "override": {"reason": "board-level deal"}}
    jumped = await deals.command(deal_id, "advance", override, headers=MANAGER)
    assert jumped.status_code == 200, jumped.text
    (forced,) = (await deals.read(f"/v1/deals/{deal_id}/provenance", stage="proposal"))["entries"]
    manager = KEYS["manager"]
    assert forced["override"] == {
        "reason": "board-level deal",
        "by": str(manager.key_id),
        "by_name": "maria.manager",  # who, not just which key
        "by_role": "manager",
    }
    assert forced["actor"] == {"id": str(manager.key_id), "name": manager.name, "role": "manager"}
    assert all(items == [] for items in forced["criteria"].values())

    opened = (await deals.read(f"/v1/deals/{deal_id}/provenance", stage="discovery"))["entries"]
    assert [e["event_type"] for e in opened] == ["DealOpened"]

    bad = await client.get(f"/v1/deals/{deal_id}/provenance", params={"stage": "heaven"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


async def test_as_of_replays_the_deal_as_the_api_returned_it_then(deals: Deals) -> None:
    deal = await deals.open(**READY)
    deal_id = deal["id"]
    seen: list[tuple[datetime, int, dict[str, Any]]] = []

    async def remember() -> None:
        now = await deals.get(deal_id)
        seen.append((datetime.now(UTC), deals.position, now))

    await remember()
    await deals.make_ready_for(deal_id, "discovery")
    await remember()
    assert (await deals.command(deal_id, "advance", {"to_stage": "qualification"})).is_success
    await remember()
    blocker = {"category": "budget_uncertainty", "description": "CFO on leave"}
    assert (await deals.command(deal_id, "blockers", blocker)).is_success
    await remember()
    trigger = {"to_stage": "discovery", "trigger": "requirements_changed"}
    assert (await deals.command(deal_id, "regress", trigger)).is_success
    await remember()

    for when, position, state in seen:
        by_time = await deals.read(f"/v1/deals/{deal_id}", as_of=when.isoformat())
        by_position = await deals.read(f"/v1/deals/{deal_id}", as_of_position=position)
        assert by_time == state
        assert by_position == state
    assert seen[-1][2]["stage"] == "discovery" and seen[2][2]["stage"] == "qualification"


async def test_as_of_before_the_deal_existed_is_404(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    before = datetime.now(UTC)
    deal = await deals.open()
    response = await client.get(f"/v1/deals/{deal['id']}", params={"as_of": before.isoformat()})
    assert response.status_code == 404
    assert "did not exist then" in response.json()["detail"]
    naive = await client.get(f"/v1/deals/{deal['id']}", params={"as_of": "2026-01-01T00:00:00"})
    assert naive.status_code == 422


async def test_pipeline_as_of_shows_the_whole_pipeline_then(deals: Deals) -> None:
    first = await deals.open(**{**READY, "name": "Alpha", "amount": "1000"})
    second = await deals.open(name="Beta", amount="2500", currency="USD")
    await deals.make_ready_for(first["id"], "discovery")
    then_time = datetime.now(UTC)
    then = await deals.read("/v1/pipeline")
    discovery = next(s for s in then["stages"] if s["stage"] == "discovery")
    assert discovery == {
        "stage": "discovery",
        "count": 2,
        "amounts": {"USD": "3500"},
        "weighted": {"USD": "350.00"},  # 10 % of each
    }

    advanced = await deals.command(first["id"], "advance", {"to_stage": "qualification"})
    assert advanced.is_success, advanced.text
    assert (await deals.command(second["id"], "disqualify", {"reason": "cannot_afford"})).is_success
    await deals.open(name="Gamma")
    now = await deals.read("/v1/pipeline")
    counts = {s["stage"]: s["count"] for s in now["stages"]}
    assert (counts["discovery"], counts["qualification"], counts["disqualified"]) == (1, 1, 1)

    replayed = await deals.read("/v1/pipeline", as_of=then_time.isoformat())
    assert replayed["stages"] == then["stages"]
    assert replayed["deals"] == then["deals"]


async def test_verify_reports_a_clean_chain_and_pinpoints_tampering(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    deal = await deals.open()
    await deals.evidence(deal["id"], "budget_confirmed")
    clean = (await client.get(f"/v1/deals/{deal['id']}/verify")).json()
    history = await history_of(deals, deal["id"])
    assert {k: clean[k] for k in ("valid", "events_checked", "head_hash", "breaks")} == {
        "valid": True,
        "events_checked": 3,
        "head_hash": history[-1]["hash"],
        "breaks": [],
    }
    await pg.execute("ALTER TABLE events DISABLE TRIGGER USER")
    await pg.execute(
        "UPDATE events SET data = jsonb_set(data, '{summary}', '\"rewritten\"')"
        " WHERE stream_id = $1 AND version = 3",
        deal["id"],
    )
    await pg.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_delete")
    broken = (await client.get(f"/v1/deals/{deal['id']}/verify")).json()
    assert broken["valid"] is False and broken["first_invalid_version"] == 3
    assert broken["breaks"][0] == {"version": 3, "reason": "content does not match its hash"}
    marked = await history_of(deals, deal["id"])
    assert [e["hash_verified"] for e in marked] == [True, True, False]

    missing = await client.get("/v1/deals/00000000-0000-4000-8000-000000000000/verify")
    assert missing.status_code == 404


@pytest.fixture
async def client_without_projector(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(run_projector=False, read_wait_seconds=0.2)
    async with app_client(database_url, settings) as http:
        yield http


async def test_a_read_model_behind_min_position_answers_503_with_retry_after(
    client_without_projector: httpx.AsyncClient,
) -> None:
    client = client_without_projector
    created = await client.post("/v1/deals", json={"name": "Lag", "owner": "o"}, headers=REP)
    position = created.json()["position"]
    assert isinstance(position, int) and position > 0
    for url in ("/v1/deals", f"/v1/deals/{created.json()['id']}/stage-history", "/v1/pipeline"):
        response = await client.get(url, params={"min_position": position})
        assert response.status_code == 503, url
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert str(position) in response.json()["detail"]
    # Without min_position the (empty) read model answers at once.
    assert (await client.get("/v1/deals")).json()["items"] == []


async def test_stage_facts_sum_repeat_stays(deals: Deals) -> None:
    deal = await deals.open(**READY)
    opened_at = datetime.fromisoformat(deal["stage_entered_at"])
    body = {"to_stage": "qualification", "override": {"reason": "call went well"}}
    assert (await deals.command(deal["id"], "advance", body, headers=MANAGER)).is_success
    back = {"to_stage": "discovery", "trigger": "timeline_extended"}
    assert (await deals.command(deal["id"], "regress", back)).is_success
    back_at = datetime.fromisoformat((await deals.get(deal["id"]))["stage_entered_at"])
    later = back_at + timedelta(days=3)
    found = await deals.read(f"/v1/deals/{deal['id']}/stage-facts", as_of=later.isoformat())
    facts = {row["stage"]: row for row in found["stages"]}
    discovery = facts["discovery"]
    assert discovery["stays"] == 2 and discovery["current"] is True
    assert datetime.fromisoformat(discovery["first_entered_at"]) == opened_at
    assert discovery["latest_days"] == 3.0
    assert facts["qualification"]["stays"] == 1 and facts["qualification"]["current"] is False
    qualification_days = facts["qualification"]["cumulative_days"]
    # Both stays in discovery fill the time from opening to `later` but for qualification's.
    whole = (later - opened_at) / timedelta(days=1)
    assert abs(discovery["cumulative_days"] - (whole - qualification_days)) < 1e-3
