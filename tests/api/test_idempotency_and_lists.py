"""Retries with Idempotency-Key, and the list endpoints' filters and cursors."""

from __future__ import annotations

import asyncio

import httpx

from tests.api.conftest import REP, WHEN, Deals


async def test_retried_post_with_same_key_creates_nothing_new(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    body = {"type": "email_replied", "occurred_at": WHEN, "details": {"response_time_hours": 3}}
    headers = {**REP, "Idempotency-Key": "email-42"}
    first = await client.post(f"/v1/deals/{deal['id']}/activities", json=body, headers=headers)
    again = await client.post(f"/v1/deals/{deal['id']}/activities", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    deals.saw(again)
    assert (await deals.get(deal["id"]))["version"] == deal["version"] + 1


async def test_concurrent_retries_of_deal_creation_make_one_deal(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    headers = {**REP, "Idempotency-Key": "crm-sync-7"}
    body = {"name": "Globex", "owner": "rick.rep"}
    responses = await asyncio.gather(
        *(client.post("/v1/deals", json=body, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    for response in responses:
        deals.saw(response)
    listed = (await deals.list())["items"]
    assert [d["name"] for d in listed] == ["Globex"]


async def test_same_key_different_body_is_422(deals: Deals, client: httpx.AsyncClient) -> None:
    deal = await deals.open()
    headers = {**REP, "Idempotency-Key": "k1"}
    url = f"/v1/deals/{deal['id']}/activities"
    ok = await client.post(url, json={"type": "call_held", "occurred_at": WHEN}, headers=headers)
    assert ok.status_code == 201
    other = await client.post(
        url, json={"type": "meeting_held", "occurred_at": WHEN}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"


async def test_second_deal_with_the_same_external_ref_is_409(client: httpx.AsyncClient) -> None:
    body = {
        "name": "Initech",
        "owner": "rick.rep",
        "external_ref": {"source": "hubspot", "id": "d-1"},
    }
    assert (await client.post("/v1/deals", json=body)).status_code == 201
    second = await client.post("/v1/deals", json={**body, "name": "Initech again"})
    assert second.status_code == 409
    other_source = {**body, "external_ref": {"source": "salesforce", "id": "d-1"}}
    assert (await client.post("/v1/deals", json=other_source)).status_code == 201


async def test_list_filters_and_paginates_with_cursor(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    opened = [await deals.open(name=f"deal {i}", owner="ann" if i % 2 else "bob") for i in range(7)]
    await deals.command(opened[0]["id"], "disqualify", {"reason": "cannot_afford"})

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await deals.list(**params)
        seen += [d["name"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"deal {i}" for i in range(7)]

    anns = (await deals.list(owner="ann"))["items"]
    assert [d["name"] for d in anns] == ["deal 1", "deal 3", "deal 5"]
    gone = (await deals.list(status="disqualified"))["items"]
    assert [d["name"] for d in gone] == ["deal 0"]
    discovery = (await deals.list(stage="discovery"))["items"]
    assert len(discovery) == 6


async def test_bad_cursor_and_limit_are_422(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/deals", params={"cursor": "not-a-cursor"})).status_code == 422
    assert (await client.get("/v1/deals", params={"limit": 501})).status_code == 422


async def test_history_pages_through_the_deal_events(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    for _ in range(3):
        await deals.evidence(deal["id"], "budget_confirmed")
    first = (await client.get(f"/v1/deals/{deal['id']}/history", params={"limit": 3})).json()
    assert [e["version"] for e in first["items"]] == [1, 2, 3]
    rest = (
        await client.get(
            f"/v1/deals/{deal['id']}/history", params={"limit": 3, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [e["version"] for e in rest["items"]] == [4, 5]
    assert rest["next_cursor"] is None
    assert first["items"][0]["type"] == "DealOpened"
    assert first["items"][0]["metadata"]["actor"]["name"] == "rick.rep"
    assert len(first["items"][0]["hash"]) == 64


async def test_default_pipeline_is_published(client: httpx.AsyncClient) -> None:
    pipeline = (await client.get("/v1/pipelines/default")).json()
    assert [s["key"] for s in pipeline["stages"]] == [
        "discovery",
        "qualification",
        "proposal",
        "negotiation",
        "closing",
    ]
    discovery = pipeline["stages"][0]
    assert discovery["probability"] == 0.1 and discovery["expected_days"] == 7
    assert (await client.get("/v1/pipelines/nope")).status_code == 404


async def test_unknown_query_parameters_and_epoch_times_are_422(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    typo = await client.get("/v1/deals", params={"stauts": "won"})
    assert typo.status_code == 422
    assert "stauts" in typo.json()["detail"] and "status" in typo.json()["detail"]
    epoch = await client.get(f"/v1/deals/{deal['id']}", params={"as_of": "1700000000"})
    assert epoch.status_code == 422
    assert "ISO 8601" in epoch.text
    nowhere = await client.get("/v1/deals", params={"min_position": 10**12})
    assert nowhere.status_code == 422
    assert "no event at position" in nowhere.json()["detail"]
    huge = await client.get(f"/v1/deals/{deal['id']}", params={"as_of_position": 2**70})
    assert huge.status_code == 422
