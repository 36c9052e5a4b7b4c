"""Two service processes on one database, each with its own cache of deal heads: what one
caches may be stale after the other writes, and no answer may change because of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import httpx
import pytest

from app.settings import Settings
from tests.api.conftest import MANAGER, REP, Deals, criteria_of
from tests.keys import KEYS
from tests.support import app_client


@pytest.fixture
async def other(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(database_url, Settings(run_projector=False), "http://other") as http:
        yield http


async def test_a_stale_cache_never_changes_an_answer(
    deals: Deals, client: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    deal = await deals.open(amount="50000", currency="USD", close_date="2027-03-01")
    url = f"/v1/deals/{deal['id']}"
    activity = {"type": "email_replied", "occurred_at": "2026-11-20T10:00:00+00:00"}
    assert (await client.post(f"{url}/activities", json=activity)).status_code == 201
    refused = await client.post(f"{url}/advance", json={"to_stage": "qualification"})
    assert refused.status_code == 422  # this process now caches the deal without evidence

    # The other process records every criterion.
    for criterion in criteria_of("discovery"):
        body = {
            "kind": "meeting_notes",
            "criteria": [criterion],
            "summary": "confirmed",
            "occurred_at": "2026-11-20T10:00:00+00:00",
            "source": {"system": "gong", "ref": criterion},
        }
        assert (await other.post(f"{url}/evidence", json=body)).status_code == 201

    # Decided on the stale cache this would be refused again; it is not.
    advanced = await client.post(f"{url}/advance", json={"to_stage": "qualification"})
    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["stage"] == "qualification"

    # The other process's cache is stale now: its append conflicts, it reads, it succeeds.
    again = await other.post(f"{url}/activities", json=activity)
    assert again.status_code == 201, again.text

    # If-Match against the true version succeeds through the stale side; a stale one is 412.
    history = (await client.get(f"{url}/history", params={"limit": 500})).json()
    version = max(e["version"] for e in history["items"])
    changed = await client.patch(
        url, json={"owner": "olga"}, headers={**REP, "If-Match": f'"{version}"'}
    )
    assert changed.status_code == 200, changed.text
    stale = await other.patch(url, json={"owner": "ivan"}, headers={"If-Match": f'"{version}"'})
    assert stale.status_code == 412

    history = (await client.get(f"{url}/history", params={"limit": 500})).json()
    assert [e["version"] for e in history["items"]] == list(range(1, version + 2))
    verified = (await other.get(f"{url}/verify", headers=MANAGER)).json()
    assert verified["valid"] is True


async def _metric(http: httpx.AsyncClient, name: str) -> float:
    """A counter's value in /metrics (summed over its labels; both test processes count
    into one registry, as they share one Python process)."""
    values = [
        float(line.split()[-1])
        for line in (await http.get("/metrics")).text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    ]
    if not values:
        raise AssertionError(f"no {name} in /metrics")
    return sum(values)


async def test_a_process_hears_the_others_appends_and_decides_on_them_without_a_read(
    deals: Deals, client: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    """Every append announces the head it reached and the events that took it there; a
    process caching that deal folds them onto its cached head, so its next command neither
    inserts after a stale head (a conflict, then a read) nor reads on first (with N
    processes either was most commands: twice the database work)."""
    deal = await deals.open()
    url = f"/v1/deals/{deal['id']}/activities"
    activity = {"type": "email_replied", "occurred_at": "2026-11-20T10:00:00+00:00"}
    for http in (client, other):  # both processes cache the deal
        assert (await http.post(url, json=activity)).status_code == 201
    conflicts = await _metric(client, "dealledger_append_conflicts_total")
    reads = await _metric(client, "dealledger_deal_reads_total")
    for turn in range(20):
        await asyncio.sleep(0.1)  # the announcement's moment (it follows the commit)
        answered = await (client if turn % 2 else other).post(url, json=activity)
        assert answered.status_code == 201, answered.text
    # Each of these commands came after the other process had moved the deal on: without
    # the announcements all 20 conflicted, with heads alone all 20 read on first. A slow
    # machine may miss one or two.
    assert await _metric(client, "dealledger_append_conflicts_total") - conflicts <= 2
    assert await _metric(client, "dealledger_deal_reads_total") - reads <= 2
    history = (await other.get(f"/v1/deals/{deal['id']}/history", params={"limit": 100})).json()
    kinds = [e["type"] for e in history["items"]]
    assert kinds.count("BuyerActivityRecorded") == 22
    assert [e["version"] for e in history["items"]] == list(range(1, len(kinds) + 1))
    assert (await client.get(f"/v1/deals/{deal['id']}/verify")).json()["valid"] is True


async def test_ingestion_through_a_stale_cache_appends_after_the_true_head(
    deals: Deals, client: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    ingest = {**KEYS["ingest"].headers, "content-type": "application/cloudevents-batch+json"}

    def batch(*ids: str) -> list[dict[str, object]]:
        return [
            {
                "specversion": "1.0",
                "id": i,
                "source": "//gmail/acme",
                "type": "com.dealledger.activity.email_replied",
                "subject": deal["id"],
                "time": "2026-11-21T09:30:00Z",
                "data": {},
            }
            for i in ids
        ]

    first = await client.post("/v1/events", json=batch("m-1", "m-2"), headers=ingest)
    assert first.status_code == 200, first.text
    activity = {"type": "call_held", "occurred_at": "2026-11-21T10:00:00+00:00"}
    assert (
        await other.post(f"/v1/deals/{deal['id']}/activities", json=activity)
    ).status_code == 201
    await asyncio.sleep(0.1)  # announced: this process reads on from its cached head
    second = await client.post("/v1/events", json=batch("m-2", "m-3"), headers=ingest)
    assert second.status_code == 200, second.text
    assert [r["status"] for r in second.json()["results"]] == ["duplicate", "accepted"]
    history = (await other.get(f"/v1/deals/{deal['id']}/history", params={"limit": 100})).json()
    kinds = [e["type"] for e in history["items"]]
    assert kinds.count("BuyerActivityRecorded") == 4  # m-1, m-2, the call, m-3
    assert [e["version"] for e in history["items"]] == list(range(1, len(kinds) + 1))
    assert (await other.get(f"/v1/deals/{deal['id']}/verify")).json()["valid"] is True


async def test_a_deal_opened_elsewhere_is_found_by_a_process_that_missed_it(
    client: httpx.AsyncClient, other: httpx.AsyncClient
) -> None:
    """ "No such deal" is never cached: a CRM retrying an event for a deal another process
    has opened since gets it accepted."""
    ingest = {**KEYS["ingest"].headers, "content-type": "application/cloudevents+json"}

    def event(i: str) -> dict[str, object]:
        return {
            "specversion": "1.0",
            "id": i,
            "source": "//gmail/acme",
            "type": "com.dealledger.activity.email_replied",
            "time": "2026-11-21T09:30:00Z",
            "data": {"deal_ref": {"source": "hubspot", "id": "deal-77"}},
        }

    early = await client.post("/v1/events", json=event("m-1"), headers=ingest)
    assert early.status_code == 404, early.text
    opened = await other.post(
        "/v1/deals",
        json={
            "name": "Acme",
            "owner": "rick.rep",
            "external_ref": {"source": "hubspot", "id": "deal-77"},
        },
    )
    assert opened.status_code == 201, opened.text
    retried = await client.post("/v1/events", json=event("m-1"), headers=ingest)
    assert retried.status_code in (200, 201), retried.text


async def test_four_processes_storming_the_same_deals_lose_no_command_and_keep_dense_versions(
    deals: Deals, client: httpx.AsyncClient, database_url: str, pg: asyncpg.Connection
) -> None:
    opened = [await deals.open() for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        sides = [
            await stack.enter_async_context(
                app_client(database_url, Settings(run_projector=False), f"http://side{n}")
            )
            for n in range(4)
        ]

        async def storm(side: httpx.AsyncClient, n: int) -> list[tuple[int, str]]:
            answers = []
            for i in range(15):
                deal = opened[(n + i) % len(opened)]["id"]
                body = {
                    "type": "email_replied",
                    "occurred_at": "2026-11-20T10:00:00+00:00",
                    "details": {"side": n, "i": i},
                }
                sent = await side.post(f"/v1/deals/{deal}/activities", json=body)
                answers.append((sent.status_code, deal))
            return answers

        # Every side's cache goes stale as the others write: each append races the others.
        results = await asyncio.gather(*(storm(side, n) for n, side in enumerate(sides)))
    codes = [code for answers in results for code, _ in answers]
    assert set(codes) == {201}, codes
    for deal in opened:
        acknowledged = sum(1 for answers in results for code, d in answers if d == deal["id"])
        rows = await pg.fetch(
            "SELECT version, type FROM events WHERE stream_id = $1 ORDER BY version",
            UUID(deal["id"]),
        )
        assert [r["version"] for r in rows] == list(range(1, len(rows) + 1))
        assert sum(r["type"] == "BuyerActivityRecorded" for r in rows) == acknowledged
        sides_seen = await pg.fetch(
            "SELECT data->'details' AS details FROM events WHERE stream_id = $1"
            " AND type = 'BuyerActivityRecorded'",
            UUID(deal["id"]),
        )
        assert len({r["details"] for r in sides_seen}) == acknowledged  # each once
        verified = (await client.get(f"/v1/deals/{deal['id']}/verify", headers=MANAGER)).json()
        assert verified["valid"] is True
