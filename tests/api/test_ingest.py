"""CloudEvents ingestion through HTTP: dedup by (source, id), partial batches, bad input."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
import httpx

from app.api.events import BatchResult, ItemResult
from tests.api.conftest import WHEN, Deals
from tests.keys import KEYS

INGEST = KEYS["ingest"].headers
ONE = {**INGEST, "content-type": "application/cloudevents+json"}
MANY = {**INGEST, "content-type": "application/cloudevents-batch+json"}


def activity(deal_id: str, ce_id: str, kind: str = "email_replied", **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": ce_id,
        "source": "//gmail/acme",
        "type": f"com.dealledger.activity.{kind}",
        "subject": deal_id,
        "time": WHEN,
        "data": data,
    }


async def post(client: httpx.AsyncClient, body: Any, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/events", content=json.dumps(body), headers=headers)


async def test_one_cloudevent_is_stored_once_with_its_envelope(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    event = activity(deal["id"], "msg-1", response_time_hours=4)
    first = await post(client, event, ONE)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "accepted" and first.json()["deal_id"] == deal["id"]
    again = await post(client, event, ONE)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert again.json()["position"] == first.json()["position"]

    deals.saw(first)
    history = await deals.read(f"/v1/deals/{deal['id']}/history")
    stored = [e for e in history["items"] if e["type"] == "BuyerActivityRecorded"]
    assert len(stored) == 1
    assert stored[0]["position"] == first.json()["position"]
    assert stored[0]["data"]["details"] == {"response_time_hours": 4}
    assert stored[0]["metadata"]["cloudevent"] == {
        "source": "//gmail/acme",
        "id": "msg-1",
        "type": "com.dealledger.activity.email_replied",
        "time": "2026-11-20T10:00:00+00:00",
        "subject": deal["id"],
    }
    assert stored[0]["metadata"]["actor"]["name"] == "gmail-sync"
    assert (await deals.get(deal["id"]))["last_buyer_activity_at"] == "2026-11-20T10:00:00Z"


async def test_evidence_by_deal_ref_counts_toward_exit_criteria(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open(external_ref={"source": "hubspot", "id": "deal-77"})
    event = {
        "specversion": "1.0",
        "id": "call-9",
        "source": "//gong",
        "type": "com.dealledger.evidence.recorded",
        "time": WHEN,
        "data": {
            "deal_ref": {"source": "hubspot", "id": "deal-77"},
            "kind": "call_recording",
            "criteria": ["budget_confirmed"],
            "summary": "CFO: 80k approved",
        },
    }
    response = await post(client, event, ONE)
    assert response.status_code == 201, response.text
    deals.saw(response)
    now = await deals.get(deal["id"])
    budget = next(c for c in now["exit_criteria"] if c["key"] == "budget_confirmed")
    assert budget["met"] is True
    history = await deals.read(f"/v1/deals/{deal['id']}/history")
    recorded = next(e for e in history["items"] if e["type"] == "EvidenceRecorded")
    assert recorded["data"]["source"]["system"] == "//gong"
    assert recorded["data"]["source"]["ref"] == "call-9"


async def test_a_batch_keeps_the_good_items_and_rejects_each_bad_one_with_a_reason(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    deal = await deals.open()
    good = [activity(deal["id"], f"ok-{i}", "meeting_held", minutes=30) for i in range(3)]
    unknown_deal = activity(str(uuid.uuid4()), "lost-1")
    unknown_type = {**activity(deal["id"], "t-1"), "type": "com.dealledger.activity.dancing"}
    no_id = {k: v for k, v in activity(deal["id"], "x").items() if k != "id"}
    not_object = ["just", "a", "list"]
    bad_evidence = {
        **activity(deal["id"], "ev-1"),
        "type": "com.dealledger.evidence.recorded",
        "data": {"kind": "email", "criteria": [], "summary": "s"},
    }
    unknown_criterion = {
        **bad_evidence,
        "id": "ev-2",
        "data": {"kind": "email", "criteria": ["vibes_good"], "summary": "s"},
    }
    bad_time = {**activity(deal["id"], "time-1"), "time": "yesterday"}
    batch = [
        good[0],
        unknown_deal,
        unknown_type,
        good[1],
        no_id,
        not_object,
        bad_evidence,
        unknown_criterion,
        bad_time,
        good[2],
    ]
    response = await post(client, batch, MANY)
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 0, 7)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(10))
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "rejected",
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    problems = {r["index"]: r["problem"] for r in results if r["problem"]}
    assert problems[1]["status"] == 404 and "does not exist" in problems[1]["detail"]
    assert problems[2]["type"] == "/problems/unknown-event-type"
    assert "com.dealledger.activity.meeting_held" in problems[2]["detail"]
    assert "id" in problems[4]["detail"]
    assert problems[5]["detail"] == "a CloudEvent must be a JSON object"
    assert "data.criteria" in problems[6]["detail"]
    assert "vibes_good" in problems[7]["detail"]
    assert problems[8]["type"] == "/problems/invalid-cloudevent"
    assert results[4]["source"] == "//gmail/acme" and results[4]["id"] is None
    # Every item names itself as sent: parsed ones (accepted, or refused by the deal), and
    # those refused before parsing as far as they have a source and an id.
    ids = ["ok-0", "lost-1", "t-1", "ok-1", None, None, "ev-1", "ev-2", "time-1", "ok-2"]
    assert [(r["source"], r["id"]) for r in results] == [
        (None if i == 5 else "//gmail/acme", ce_id) for i, ce_id in enumerate(ids)
    ]
    stored = await pg.fetch(
        "SELECT metadata->'cloudevent'->>'id' AS id FROM events"
        " WHERE type = 'BuyerActivityRecorded' ORDER BY position"
    )
    assert [r["id"] for r in stored] == ["ok-0", "ok-1", "ok-2"]
    assert body["position"] == max(r["position"] for r in results if r["position"])
    # The documented shape exactly.
    assert BatchResult.model_validate(body).model_dump(mode="json") == body
    again = await post(client, [good[0], good[1]], MANY)
    assert again.status_code == 200
    assert BatchResult.model_validate(again.json()).model_dump(mode="json") == again.json()
    assert [r["status"] for r in again.json()["results"]] == ["duplicate", "duplicate"]
    assert again.json()["position"] is None
    one = await post(client, activity(deal["id"], "ok-9"), ONE)
    assert one.status_code == 201
    assert ItemResult.model_validate(one.json()).model_dump(mode="json") == one.json()


async def test_10000_cloudevents_with_20_percent_duplicates_store_exactly_8000(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    rng = random.Random(20)
    deal_ids = [(await deals.open(name=f"deal {i}"))["id"] for i in range(40)]
    unique = [
        activity(rng.choice(deal_ids), f"m-{i}", rng.choice(["email_replied", "meeting_held"]))
        for i in range(8000)
    ]
    stream = unique + [rng.choice(unique) for _ in range(2000)]
    rng.shuffle(stream)
    batches = [stream[i : i + 250] for i in range(0, len(stream), 250)]
    answers: dict[str, list[tuple[str, int]]] = defaultdict(list)

    async def sender(mine: list[list[dict[str, Any]]]) -> None:
        for batch in mine:
            pending = batch
            while pending:  # a real client resends what lost a race (409), nothing else
                response = await post(client, pending, MANY)
                assert response.status_code in (200, 207), response.text
                retry = []
                for item, result in zip(pending, response.json()["results"], strict=True):
                    if result["status"] == "rejected":
                        assert result["problem"]["status"] == 409, result
                        retry.append(item)
                    else:
                        answers[item["id"]].append((result["status"], result["position"]))
                pending = retry

    # Four senders at once: some duplicates arrive concurrently, in different batches.
    await asyncio.gather(*(sender(batches[k::4]) for k in range(4)))

    assert (
        await pg.fetchval("SELECT count(*) FROM events WHERE type = 'BuyerActivityRecorded'")
        == 8000
    )
    distinct = await pg.fetchval(
        "SELECT count(DISTINCT metadata->'cloudevent'->>'id') FROM events"
        " WHERE type = 'BuyerActivityRecorded'"
    )
    assert distinct == 8000
    stored = {
        r["id"]: r["position"]
        for r in await pg.fetch(
            "SELECT metadata->'cloudevent'->>'id' AS id, position FROM events"
            " WHERE type = 'BuyerActivityRecorded'"
        )
    }
    assert sum(len(a) for a in answers.values()) == 10000
    for ce_id, replies in answers.items():
        assert {position for _, position in replies} == {stored[ce_id]}, ce_id
        assert [status for status, _ in replies].count("accepted") == 1, ce_id


async def test_bad_requests_are_problems(deals: Deals, client: httpx.AsyncClient) -> None:
    deal = await deals.open()
    event = activity(deal["id"], "m-1")
    plain = await client.post("/v1/events", json=event, headers=INGEST)
    assert plain.status_code == 415
    assert "application/cloudevents+json" in plain.json()["detail"]
    broken = await client.post("/v1/events", content=b"{not json", headers=ONE)
    assert broken.status_code == 422
    assert (await post(client, event, MANY)).status_code == 422  # a batch must be an array
    assert (await post(client, [], MANY)).status_code == 422
    too_many = [activity(deal["id"], f"m-{i}") for i in range(1001)]
    over = await post(client, too_many, MANY)
    assert over.status_code == 422 and "at most 1000" in over.json()["detail"]
    unknown = await post(client, activity(str(uuid.uuid4()), "m-2"), ONE)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["id"] == "m-2"
    nul = await post(client, activity(deal["id"], "m-3", note="a\x00b"), ONE)
    assert nul.status_code == 422 and "NUL" in nul.json()["detail"]
    for response in (plain, broken, over):
        assert response.headers["content-type"] == "application/problem+json"
