"""The record cannot be bent: nothing acknowledged is dropped, keys are scoped per caller,
CloudEvents are stored once under any race, and a write lost in transit is safely retried."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from app.settings import Settings
from tests.api.conftest import MANAGER, REP, WHEN, Deals, criteria_of
from tests.keys import KEYS
from tests.support import app_client

INGEST = KEYS["ingest"].headers


async def test_two_callers_reusing_an_idempotency_key_each_get_their_command_recorded(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open(amount="48000", currency="EUR", close_date="2027-03-31")
    await deals.evidence(deal["id"], *criteria_of("discovery"))
    activity = {"type": "email_replied", "occurred_at": WHEN}
    url = f"/v1/deals/{deal['id']}"
    rep = await client.post(
        f"{url}/activities", json=activity, headers={**REP, "Idempotency-Key": "k1"}
    )
    assert rep.status_code == 201, rep.text
    advanced = deals.saw(
        await client.post(
            f"{url}/advance",
            json={"to_stage": "qualification"},
            headers={**MANAGER, "Idempotency-Key": "k1"},
        )
    )
    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["stage"] == "qualification"
    types = [item["type"] for item in (await deals.read(f"{url}/history"))["items"]]
    assert types.count("BuyerActivityRecorded") == 1
    assert "StageAdvanced" in types


async def test_evidence_ids_derived_from_a_reused_key_exist_for_each_caller(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    url = f"/v1/deals/{deal['id']}/evidence"
    ids = []
    for headers in (REP, MANAGER):
        body = {
            "kind": "meeting_notes",
            "criteria": ["budget_confirmed"],
            "summary": f"confirmed to {headers['Authorization'][-12:]}",
            "occurred_at": WHEN,
        }
        response = deals.saw(
            await client.post(url, json=body, headers={**headers, "Idempotency-Key": "same"})
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["evidence_id"])
    assert ids[0] != ids[1]
    (budget,) = [
        c for c in (await deals.get(deal["id"]))["exit_criteria"] if c["key"] == "budget_confirmed"
    ]
    assert set(budget["evidence_ids"]) == set(ids)


def cloud_event(ce_id: str, subject: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": ce_id,
        "source": "//gmail/acme",
        "type": "com.dealledger.activity.email_replied",
        "subject": subject,
        "time": WHEN,
        "data": {"response_time_hours": 2},
    }


async def test_a_cloudevent_posted_at_once_for_two_deals_is_stored_once(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    first, second = (await deals.open(name="A"))["id"], (await deals.open(name="B"))["id"]
    headers = {**INGEST, "content-type": "application/cloudevents+json"}
    for round_ in range(25):
        ce_id = f"race-{round_}"
        answers = await asyncio.gather(
            *(
                client.post("/v1/events", json=cloud_event(ce_id, subject), headers=headers)
                for subject in (first, second, first, second)
            )
        )
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [
            a.text for a in answers
        ]
        stored = await pg.fetchval(
            "SELECT count(*) FROM events WHERE metadata->'cloudevent'->>'id' = $1", ce_id
        )
        assert stored == 1, f"round {round_}: (source, id) stored {stored} times"
        positions = {a.json()["position"] for a in answers}
        assert len(positions) == 1  # duplicates answer with the original's position


async def test_a_write_whose_response_was_lost_is_retried_safely(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    """The command committed but its answer never reached the client, nor was it remembered
    (the process died in between): a retry with the same key stores nothing new."""
    deal = await deals.open()
    url = f"/v1/deals/{deal['id']}/activities"
    body = {"type": "call_held", "occurred_at": WHEN}
    headers = {**REP, "Idempotency-Key": "lost-1"}
    first = await client.post(url, json=body, headers=headers)
    assert first.status_code == 201
    await pg.execute("DELETE FROM idempotency_keys")  # as if the response was never stored
    retried = await client.post(url, json=body, headers=headers)
    assert retried.status_code == 201, retried.text
    assert retried.json()["position"] == first.json()["position"]
    versions = await pg.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1", uuid.UUID(deal["id"])
    )
    assert versions == deal["version"] + 1


def in_seconds(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def test_evidence_and_activity_from_the_future_are_refused_naming_the_field(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    url = f"/v1/deals/{deal['id']}"
    evidence = {
        "kind": "meeting_notes",
        "criteria": ["budget_confirmed"],
        "summary": "signed in 2031",
        "occurred_at": "2031-01-01T00:00:00+00:00",
    }
    for path, body in [
        ("evidence", evidence),
        ("activities", {"type": "email_replied", "occurred_at": "2030-06-01T00:00:00Z"}),
    ]:
        refused = await client.post(f"{url}/{path}", json=body, headers=REP)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "/problems/occurred-in-future"
        assert refused.json()["field"] == "occurred_at"
    # Within the allowed skew (300 s by default) a sender's clock may run ahead.
    ahead = {"type": "email_replied", "occurred_at": in_seconds(120)}
    assert (await client.post(f"{url}/activities", json=ahead, headers=REP)).status_code == 201
    assert (await deals.get(deal["id"]))["exit_criteria"][0]["met"] is False


async def test_a_cloudevent_from_the_future_is_rejected_alone_naming_time(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = (await deals.open())["id"]
    future = {**cloud_event("f-1", deal), "time": "2030-01-01T00:00:00Z"}
    single = await client.post(
        "/v1/events",
        json=future,
        headers={**INGEST, "content-type": "application/cloudevents+json"},
    )
    assert single.status_code == 422, single.text
    assert (single.json()["type"], single.json()["field"]) == (
        "/problems/occurred-in-future",
        "time",
    )
    evidence_later = {
        **cloud_event("f-2", deal),
        "type": "com.dealledger.evidence.recorded",
        "data": {
            "kind": "meeting_notes",
            "criteria": ["budget_confirmed"],
            "summary": "x",
            "occurred_at": "2031-01-01T00:00:00Z",
        },
    }
    batch = await client.post(
        "/v1/events",
        json=[future, cloud_event("f-3", deal), evidence_later],
        headers={**INGEST, "content-type": "application/cloudevents-batch+json"},
    )
    assert batch.status_code == 207, batch.text
    results = batch.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "accepted", "rejected"]
    assert [r["problem"]["field"] for r in (results[0], results[2])] == ["time", "data.occurred_at"]


async def test_a_read_right_after_a_write_shows_it_from_any_process(
    deals: Deals, client: httpx.AsyncClient, database_url: str
) -> None:
    deal = await deals.open()
    url = f"/v1/deals/{deal['id']}"
    async with app_client(database_url, Settings()) as other_process:
        for round_ in range(250):
            body = {"type": "call_held", "occurred_at": WHEN}
            written = await client.post(f"{url}/activities", json=body, headers=REP)
            assert written.status_code == 201
            version = written.json()["version"]
            for reader in (client, other_process):
                read = await reader.get(url)  # no min_position
                assert read.json()["version"] >= version, f"round {round_}: a stale read"
                assert read.headers["etag"] == f'"{read.json()["version"]}"'
        # The ETag of such a read is good for If-Match at once.
        etag = (await other_process.get(url)).headers["etag"]
        step = {"description": "Send the proposal", "due_date": "2026-12-01"}
        strict = await client.put(f"{url}/next-step", json=step, headers={**REP, "If-Match": etag})
        assert strict.status_code == 200, strict.text


async def test_as_of_and_as_of_position_together_are_refused(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    both = await client.get(f"/v1/deals/{deal['id']}", params={"as_of": WHEN, "as_of_position": 1})
    assert both.status_code == 422
    assert both.headers["content-type"] == "application/problem+json"
    assert "as_of" in both.json()["detail"]


async def test_retracting_the_evidence_that_earned_a_stage_raises_a_critical_flag(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open(amount="48000", currency="EUR", close_date="2027-03-31")
    proof = await deals.evidence(deal["id"], *criteria_of("discovery"))
    assert (await deals.command(deal["id"], "advance", {"to_stage": "qualification"})).is_success
    retracted = await deals.command(
        deal["id"], f"evidence/{proof}/retract", {"reason": "the budget did not exist"}
    )
    assert retracted.status_code == 200
    assert retracted.json()["stage"] == "qualification"  # the deal does not move by itself
    flags = (await deals.read(f"/v1/deals/{deal['id']}/flags"))["flags"]
    (flag,) = [f for f in flags if f["kind"] == "stage_evidence_retracted"]
    assert flag["severity"] == "critical" and flag["cleared_at"] is None
    assert flag["numbers"]["stages"] == ["discovery"]
    assert flag["numbers"]["criteria"] == sorted(criteria_of("discovery"))
    assert flag["numbers"]["retracted_evidence_ids"] == [proof]
    team = await client.get(
        "/v1/flags", params=deals.fresh(kind="stage_evidence_retracted"), headers=MANAGER
    )
    assert [f["deal_id"] for f in team.json()["items"]] == [deal["id"]]

    await deals.evidence(deal["id"], *criteria_of("discovery"), kind="email")
    flags = (await deals.read(f"/v1/deals/{deal['id']}/flags"))["flags"]
    (flag,) = [f for f in flags if f["kind"] == "stage_evidence_retracted"]
    assert flag["cleared_at"] is not None


async def test_an_outcome_closes_the_deals_open_blockers_and_next_step(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    raised = await deals.command(
        deal["id"], "blockers", {"category": "risk_aversion", "description": "legal worries"}
    )
    blocker = raised.json()["blocker_id"]
    won = await deals.command(
        deal["id"], "win", {"override": {"reason": "signed at the CEO dinner"}}, headers=MANAGER
    )
    assert won.status_code == 200, won.text
    assert won.json()["open_blockers"] == [] and won.json()["next_step"] is None
    history = (await deals.read(f"/v1/deals/{deal['id']}/history"))["items"]
    assert [(h["type"], h["data"]) for h in history[-3:]] == [
        ("DealWon", history[-3]["data"]),
        ("BlockerResolved", {"blocker_id": blocker, "resolution": "deal won"}),
        (
            "NextStepCancelled",
            {"description": deal["next_step"]["description"], "reason": "deal won"},
        ),
    ]
    by_category = await client.get("/v1/analytics/blockers", params=deals.fresh(), headers=MANAGER)
    assert [(row["category"], row["open"]) for row in by_category.json()] == [("risk_aversion", 0)]


async def test_a_binary_mode_cloudevent_is_taken_like_a_structured_one(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = (await deals.open())["id"]
    headers = {
        **INGEST,
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "bin-1",
        "ce-source": "//knative/broker",
        "ce-type": "com.dealledger.activity.meeting_held",
        "ce-subject": deal,
        "ce-time": WHEN,
    }
    body = {"attendees": 4, "minutes": 45}
    first = await client.post("/v1/events", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "accepted"
    again = await client.post("/v1/events", json=body, headers=headers)
    assert (again.status_code, again.json()["position"]) == (200, first.json()["position"])
    deals.saw(first)
    history = (await deals.read(f"/v1/deals/{deal}/history"))["items"]
    assert history[-1]["data"]["details"] == body
    assert history[-1]["metadata"]["cloudevent"]["source"] == "//knative/broker"


async def test_a_cloudevent_whose_subject_and_deal_ref_disagree_is_refused(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = (await deals.open())["id"]
    ref = {"source": "hubspot", "id": "d-77"}
    await deals.open(name="Other", external_ref=ref)
    both = {**cloud_event("m-1", deal), "data": {"deal_ref": ref}}
    headers = {**INGEST, "content-type": "application/cloudevents+json"}
    refused = await client.post("/v1/events", json=both, headers=headers)
    assert refused.status_code == 422
    assert "name different deals" in refused.json()["detail"]


async def test_an_unknown_deal_ref_is_named_as_the_sender_sent_it(
    client: httpx.AsyncClient,
) -> None:
    nobody = {**cloud_event("m-2", ""), "data": {"deal_ref": {"source": "crm", "id": "x-9"}}}
    del nobody["subject"]
    headers = {**INGEST, "content-type": "application/cloudevents+json"}
    refused = await client.post("/v1/events", json=nobody, headers=headers)
    assert refused.status_code == 404
    problem = refused.json()
    assert problem["deal_ref"] == {"source": "crm", "id": "x-9"}
    assert "x-9" in problem["detail"] and "crm" in problem["detail"]


async def test_patching_owner_to_null_is_a_clear_422(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    refused = await client.patch(f"/v1/deals/{deal['id']}", json={"owner": None}, headers=REP)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "owner" in refused.json()["detail"]


async def test_a_new_deal_has_no_flag_that_ends_the_instant_it_begins(deals: Deals) -> None:
    deal = await deals.open()
    flags = (await deals.read(f"/v1/deals/{deal['id']}/flags"))["flags"]
    assert [f for f in flags if f["raised_at"] == f["cleared_at"]] == []
    assert "no_next_step" not in {f["kind"] for f in flags}


async def test_concurrent_copies_of_one_keyed_command_all_answer_as_the_original(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open(amount="48000", currency="EUR", close_date="2027-03-31")
    await deals.evidence(deal["id"], *criteria_of("discovery"))
    url = f"/v1/deals/{deal['id']}/advance"
    headers = {**REP, "Idempotency-Key": "advance-once"}
    answers = await asyncio.gather(
        *(client.post(url, json={"to_stage": "qualification"}, headers=headers) for _ in range(20))
    )
    assert {a.status_code for a in answers} == {200}, {a.text for a in answers}
    assert {a.json()["stage"] for a in answers} == {"qualification"}
    history = (await deals.read(f"/v1/deals/{deal['id']}/history"))["items"]
    assert [h["type"] for h in history].count("StageAdvanced") == 1
