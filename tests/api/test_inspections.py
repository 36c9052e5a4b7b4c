"""Inspection reports through HTTP: the weekly review lists what moved, stalled or is
flagged, with coaching questions raised by gaps and citing their data."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from app.projections.flags import sweep, weekly_unsure
from app.projections.registry import rules_of
from app.service import inspections
from app.settings import Settings
from tests.api.conftest import MANAGER, Deals, criteria_of
from tests.support import app_client, caught_up

DAY = timedelta(days=1)


async def inspection(deals: Deals, kind: str, **params: Any) -> Any:
    params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
    response = await deals.client.get(
        f"/v1/inspections/{kind}", params=deals.fresh(**params), headers=MANAGER
    )
    assert response.status_code == 200, response.text
    return response.json() if params.get("format") != "markdown" else response.text


async def test_the_weekly_review_asks_only_what_gaps_raise(deals: Deals) -> None:
    now = datetime.now(UTC)
    ready = (await deals.open(name="Ready", amount="9000", close_date="2099-01-01"))["id"]
    people = {}
    for name, role in [("Cat", "champion"), ("Eve", "economic_buyer"), ("Dan", "decision_maker")]:
        added = await deals.command(ready, "stakeholders", {"name": name, "role": role})
        assert added.status_code == 201
        people[role] = added.json()["stakeholder_id"]
    advance = {"to_stage": "qualification", "override": {"reason": "intro call went well"}}
    assert (await deals.command(ready, "advance", advance, headers=MANAGER)).status_code == 200
    await deals.evidence(ready, *criteria_of("qualification"))
    call = {
        "type": "meeting_held",
        "occurred_at": now.isoformat(),
        "details": {"stakeholder_id": people["economic_buyer"]},
    }
    assert (await deals.command(ready, "activities", call)).status_code == 201

    bare = (await deals.open(name="Bare"))["id"]
    await deals.open(name="Someone else's", owner="sam.rep")
    gone = (await deals.open(name="Gone"))["id"]
    dq = {"reason": "will_not_buy"}
    assert (await deals.command(gone, "disqualify", dq, headers=MANAGER)).status_code == 200

    report = await inspection(deals, "weekly", owner="rick.rep", as_of=now + DAY)
    by_name = {deal["name"]: deal for deal in report["deals"]}
    assert set(by_name) == {"Ready", "Bare"} and report["total"] == 2
    first = await inspection(deals, "weekly", owner="rick.rep", as_of=now + DAY, limit=1)
    rest = await inspection(
        deals, "weekly", owner="rick.rep", as_of=now + DAY, limit=1, cursor=first["next_cursor"]
    )
    assert [d["name"] for d in first["deals"] + rest["deals"]] == ["Bare", "Ready"]
    assert rest["next_cursor"] is None
    assert by_name["Ready"]["why"] == ["moved"]
    assert by_name["Ready"]["questions"] == []  # no gap, no question
    types = [change["type"] for change in by_name["Ready"]["changes"]]
    assert types[0] == "DealOpened" and "StageAdvanced" in types
    meeting = next(c for c in by_name["Ready"]["changes"] if c["type"] == "BuyerActivityRecorded")
    assert meeting["data"]["details"] == call["details"]  # the data as stored

    questions = {q["key"]: q for q in by_name["Bare"]["questions"]}
    assert set(questions) == {"ready_to_advance", "next_stage", "missing_stakeholders"}
    assert questions["next_stage"]["cites"]["missing_required_fields"] == ["amount", "close_date"]
    assert questions["next_stage"]["question"] == (
        "What must happen for it to reach qualification? Qualification needs amount and close date."
    )
    assert questions["ready_to_advance"]["cites"] == {
        "stage": "discovery",
        "unmet_criteria": criteria_of("discovery"),
        "met": 0,
    }
    assert questions["missing_stakeholders"]["cites"] == {
        "missing_roles": ["champion"],
        "stage": "discovery",
    }

    # Eleven days on nothing moved; both stand there stalled (no buyer activity for 7 days on
    # Bare, its discovery step overdue), and Eve has been quiet 11 days: not yet 14.
    later = await inspection(deals, "weekly", owner="rick.rep", as_of=now + 11 * DAY)
    by_name = {deal["name"]: deal for deal in later["deals"]}
    assert by_name["Bare"]["why"] == ["stalled", "flagged"]
    assert by_name["Bare"]["changes"] == []
    bare_flags = {f["kind"]: f for f in by_name["Bare"]["flags"]}
    assert {"inactive", "next_step_overdue", "slow_in_stage"} <= set(bare_flags)
    assert bare_flags["slow_in_stage"]["explanation"].startswith("In discovery for 11 days")
    keys = {q["key"] for q in by_name["Bare"]["questions"]}
    assert "next_stage" in keys  # its step is overdue now
    ready_keys = {q["key"] for q in by_name["Ready"]["questions"]}
    assert "economic_buyer_contact" not in ready_keys
    at_14 = await inspection(deals, "weekly", owner="rick.rep", as_of=now + 14 * DAY)
    ready_questions = {
        q["key"]: q for d in at_14["deals"] if d["name"] == "Ready" for q in d["questions"]
    }
    assert ready_questions["economic_buyer_contact"]["cites"]["days_since"] == 14.0

    text = await inspection(deals, "weekly", owner="rick.rep", as_of=now + DAY, format="markdown")
    assert text.startswith("# Weekly deal review for rick.rep")
    assert "## Bare (discovery, rick.rep)" in text
    assert "1. What evidence says it is ready to advance?" in text
    assert bare not in text  # a document for people: names, not ids


async def close(deals: Deals, stages: list[str], won: bool) -> str:
    deal = (await deals.open(amount="1000", close_date="2099-01-01"))["id"]
    sponsor = {"name": "Eve", "role": "economic_buyer"}
    assert (await deals.command(deal, "stakeholders", sponsor)).status_code == 201
    for stage in stages:
        body = {"to_stage": stage, "override": {"reason": "scripted"}}
        assert (await deals.command(deal, "advance", body, headers=MANAGER)).status_code == 200
    if won:
        body = {"override": {"reason": "signed"}}
        assert (await deals.command(deal, "win", body, headers=MANAGER)).status_code == 200
    else:
        dq = {"reason": "chose_competitor"}
        assert (await deals.command(deal, "disqualify", dq, headers=MANAGER)).status_code == 200
    return str(deal)


async def test_quarterly_calibration_and_brier_score(deals: Deals) -> None:
    walks = [
        (["qualification", "proposal", "negotiation", "closing"], True),
        ([], False),
        (["qualification"], False),
        (["qualification", "proposal"], False),
    ]
    for stages, won in walks:
        await close(deals, stages, won)
    await deals.open(name="Still open")  # open deals are not judged
    report = await inspection(deals, "quarterly")
    rows = {row["stage"]: row for row in report["stages"]}
    observed = {s: (r["won"], r["deals"], r["observed_win_rate"]) for s, r in rows.items()}
    assert observed == {
        "discovery": (1, 4, 0.25),
        "qualification": (1, 3, 0.3333),
        "proposal": (1, 2, 0.5),
        "negotiation": (1, 1, 1.0),
        "closing": (1, 1, 1.0),
    }
    # Independently: every (deal, stage it was in) pair, claimed probability vs outcome.
    claimed = {
        "discovery": 0.1,
        "qualification": 0.25,
        "proposal": 0.5,
        "negotiation": 0.75,
        "closing": 0.9,
    }
    pairs = []
    for stages, won in walks:
        for stage in ["discovery", *stages]:
            pairs.append((claimed[stage] - (1.0 if won else 0.0)) ** 2)
    assert report["predictions"] == len(pairs) == 11
    assert report["brier_score"] == round(sum(pairs) / len(pairs), 6)
    assert report["brier_score"] == round(2.1 / 11, 6)  # by hand: .84+.6875+.5+.0625+.01
    assert report["deals"] == 4
    # Fewer than five deals per stage: nothing suggested, nothing applied.
    assert all(row["suggested_probability"] is None for row in report["stages"])
    assert rows["discovery"]["claimed_probability"] == 0.1
    text = await inspection(deals, "quarterly", format="markdown")
    assert "| discovery | 10% | 25% (1/4) | 7 |" in text


async def test_monthly_review_counts_this_month_against_expectations(deals: Deals) -> None:
    await close(deals, ["qualification"], False)
    deal = (await deals.open(amount="1000", close_date="2099-01-01"))["id"]
    back = {"to_stage": "discovery", "trigger": "timeline_extended"}
    forward = {"to_stage": "qualification", "override": {"reason": "try"}}
    assert (await deals.command(deal, "advance", forward, headers=MANAGER)).status_code == 200
    assert (await deals.command(deal, "regress", back)).status_code == 200
    report = await inspection(deals, "monthly")
    rows = {row["stage"]: row for row in report["stages"]}
    assert rows["discovery"]["this_month"]["entered"] == 2
    assert rows["discovery"]["expected_days"] == 7
    assert rows["qualification"]["this_month"]["regressed"] == 1
    assert report["regressions_by_trigger"] == {"timeline_extended": 1}
    assert rows["discovery"]["previous_month"] is None
    text = await inspection(deals, "monthly", format="markdown")
    assert "Regressions by trigger: timeline_extended 1" in text


async def test_the_weekly_review_now_lists_a_deal_time_flagged_since_the_last_sweep(
    database_url: str, pg: asyncpg.Connection
) -> None:
    # A deal goes quiet after ~2 s here; the projector swept when it started, not since.
    settings = Settings(inactive_days=2.5 / 86400, flag_sweep_seconds=3600)
    async with app_client(database_url, settings) as client:
        deals = Deals(client)
        quiet = (await deals.open(name="Quiet"))["id"]
        step = {"description": "send the proposal", "due_date": "2099-01-01"}
        assert (await client.put(f"/v1/deals/{quiet}/next-step", json=step)).status_code == 200
        busy = (await deals.open(name="Busy"))["id"]
        # Completing its next step leaves it without one: flagged by that event.
        done = await deals.command(busy, "next-step/complete")
        assert done.status_code == 200, done.text
        await asyncio.sleep(3)
        report = await inspection(deals, "weekly")
        sweeps = await pg.fetch(
            "SELECT deal_id, kind FROM deal_flags WHERE cleared_at IS NULL ORDER BY kind"
        )
        # The read model holds the event-raised flag only: time raised the other one.
        assert [(str(r["deal_id"]), r["kind"]) for r in sweeps] == [(busy, "no_next_step")]
        listed = {d["deal_id"]: d for d in report["deals"]}
        assert set(listed) == {quiet, busy} and report["total"] == 2
        assert [f["kind"] for f in listed[quiet]["flags"]] == ["inactive"]
        assert listed[quiet]["why"] == ["moved", "stalled", "flagged"]
        assert sorted(f["kind"] for f in listed[busy]["flags"]) == ["inactive", "no_next_step"]
        # The same week asked for explicitly (replayed from stored subjects) agrees.
        again = await inspection(deals, "weekly", as_of=report["as_of"])
        assert [d["deal_id"] for d in again["deals"]] == [d["deal_id"] for d in report["deals"]]
        assert again["total"] == report["total"]


# Inactive after 4 s; the sweep (hourly here) judges each deal at its last event and stores
# when time could next flag it: ~4 s later.
QUICK = Settings(inactive_days=4 / 86400, flag_sweep_seconds=3600)


async def _quiet_but_one(deals: Deals, names: Iterable[str], touched: str) -> dict[str, str]:
    """Deals opened with a next step and left 4.5 s; then `touched` has buyer activity."""
    step = {"description": "send the proposal", "due_date": "2099-01-01"}
    ids = {}
    for name in names:
        ids[name] = (await deals.open(name=name))["id"]
        put = await deals.client.put(f"/v1/deals/{ids[name]}/next-step", json=step)
        assert put.status_code == 200
    await asyncio.sleep(4.5)
    reply = {"type": "email_replied", "occurred_at": datetime.now(UTC).isoformat()}
    assert (await deals.command(ids[touched], "activities", reply)).status_code == 201
    return ids


async def _entered_long_ago(pg: asyncpg.Connection, ids: list[str]) -> None:
    """As if these deals had not changed stage this week (set back 10 days in the read
    models; no open flag of theirs changes)."""
    earlier = datetime.now(UTC) - 10 * DAY
    await pg.execute(
        "UPDATE deals SET stage_entered_at = $1 WHERE deal_id = ANY($2::uuid[])", earlier, ids
    )
    await pg.execute(
        "UPDATE flag_subjects SET subject = jsonb_set(subject, '{state,stage_entered_at}',"
        " to_jsonb($1::text)) WHERE deal_id = ANY($2::uuid[])",
        earlier.isoformat(),
        ids,
    )


async def test_the_weekly_review_now_judges_a_deal_that_did_not_move_once_time_may_flag_it(
    database_url: str, pg: asyncpg.Connection
) -> None:
    # Neither deal moved this week nor has an open flag; Quiet is past the time the sweep
    # stored, Busy was just touched.
    async with app_client(database_url, QUICK) as client:
        deals = Deals(client)
        ids = await _quiet_but_one(deals, ("Quiet", "Busy"), touched="Busy")
        assert (await inspection(deals, "weekly"))["total"] == 2  # both moved, as recorded
        await _entered_long_ago(pg, list(ids.values()))
        report = await inspection(deals, "weekly")
        assert [d["deal_id"] for d in report["deals"]] == [ids["Quiet"]]
        assert report["total"] == 1
        assert [f["kind"] for f in report["deals"][0]["flags"]] == ["inactive"]
        assert report["deals"][0]["why"] == ["stalled", "flagged"]
        again = await inspection(deals, "weekly", as_of=report["as_of"])
        assert [d["deal_id"] for d in again["deals"]] == [ids["Quiet"]]


async def test_weekly_pages_merge_the_listed_deals_with_those_judged_as_of_now(
    database_url: str, pg: asyncpg.Connection
) -> None:
    # A and C moved this week (listed by the read models); B and D did not, and time has
    # flagged them since the sweep judged them (judged by the review); E was just touched.
    async with app_client(database_url, QUICK) as client:
        deals = Deals(client)
        ids = await _quiet_but_one(deals, "ABCDE", touched="E")
        await _entered_long_ago(pg, [ids[name] for name in "BDE"])
        expected = [ids[name] for name in "ABCD"]
        report = await inspection(deals, "weekly")
        assert ([d["deal_id"] for d in report["deals"]], report["total"]) == (expected, 4)
        for limit in (1, 3):
            paged, cursor = [], None
            while True:
                more: dict[str, str] = {"cursor": cursor} if cursor else {}
                page = await inspection(deals, "weekly", limit=limit, **more)
                assert page["total"] == 4
                paged += [d["deal_id"] for d in page["deals"]]
                if not (cursor := page["next_cursor"]):
                    break
            assert paged == expected, limit
        again = await inspection(deals, "weekly", as_of=report["as_of"])
        assert [d["deal_id"] for d in again["deals"]] == expected


Meanwhile = Callable[[Deals, dict[str, str], datetime], Awaitable[None]]


async def _reviewed_with_a_write_between_its_reads(
    database_url: str, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, meanwhile: Meanwhile
) -> None:
    """A and C moved this week (listed by the read models), B and D are judged by the review
    (time flagged them since the sweep did), E was just touched: `meanwhile` writes right
    after the review looked for the deals it must judge, before it lists the rest. The
    review lists A to D, each once."""
    async with app_client(database_url, QUICK) as client:
        deals = Deals(client)
        ids = await _quiet_but_one(deals, "ABCDE", touched="E")
        await _entered_long_ago(pg, [ids[name] for name in "BDE"])
        unsure = weekly_unsure

        async def then_written(
            connection: asyncpg.Connection, owner: str | None, since: datetime, at: datetime
        ) -> list[tuple[UUID, bool]]:
            found = await unsure(connection, owner, since, at)
            await meanwhile(deals, ids, at)
            return found

        monkeypatch.setattr(inspections, "weekly_unsure", then_written)
        report = await inspection(deals, "weekly")
        listed = [d["deal_id"] for d in report["deals"]]
        assert (listed, report["total"]) == ([ids[name] for name in "ABCD"], 4)


async def test_a_sweep_between_the_weekly_reviews_reads_lists_no_deal_twice(
    database_url: str, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def swept(deals: Deals, ids: dict[str, str], at: datetime) -> None:
        # The projector's sweep flags B and D in the read models: they are judged already.
        assert await sweep(pg, at, rules_of(QUICK)) > 0

    await _reviewed_with_a_write_between_its_reads(database_url, pg, monkeypatch, swept)


async def test_a_deal_written_to_between_the_weekly_reviews_reads_is_still_listed(
    database_url: str, pg: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def written(deals: Deals, ids: dict[str, str], at: datetime) -> None:
        # A gets an activity, projected: it was not yet "written to since" for the first read.
        activity = {"type": "email_replied", "occurred_at": datetime.now(UTC).isoformat()}
        response = await deals.command(ids["A"], "activities", activity)
        assert response.status_code == 201, response.text
        await caught_up(pg)

    await _reviewed_with_a_write_between_its_reads(database_url, pg, monkeypatch, written)
