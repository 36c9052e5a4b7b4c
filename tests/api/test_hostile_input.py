"""Hostile input (issue 14, items 6-10): every bad value is a 4xx problem, never a 500 and
never silently changed; events have a size cap; times are bounded; refusals are cheap."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from app.keys import find_key
from tests.api.conftest import MANAGER, WHEN, Deals
from tests.keys import KEYS

INGEST = KEYS["ingest"].headers
ONE = {**INGEST, "content-type": "application/cloudevents+json"}
MANY = {**INGEST, "content-type": "application/cloudevents-batch+json"}
JSON = {"content-type": "application/json"}
PROBLEM = "application/problem+json"
KIB = 1024


async def event_count(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM events"))


def cloudevent(deal_id: str, ce_id: str, data: Any = None, **attributes: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": ce_id,
        "source": "//gmail/acme",
        "type": "com.dealledger.activity.email_replied",
        "subject": deal_id,
        "time": WHEN,
        "data": {} if data is None else data,
        **attributes,
    }


def activity_text(details_json: str, occurred_at: str = WHEN) -> str:
    """An activity body with `details` spliced in as raw JSON text (what json= cannot send)."""
    return f'{{"type":"email_replied","occurred_at":"{occurred_at}","details":{details_json}}}'


def refused(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    return dict(response.json())


# -- item 6: no 500s ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("/v1/deals", {"stage": "\x00"}),
        ("/v1/deals", {"owner": "a\x00b"}),
        ("/v1/flags", {"owner": "\x00"}),
        ("/v1/flags", {"stage": "\x00"}),
        ("/v1/analytics/time-in-stage", {"owner": "\x00"}),
        ("/v1/analytics/forecast", {"owner": "\x00"}),
        ("/v1/analytics/conversion", {"owner": "\x00"}),
    ],
)
async def test_nul_in_a_query_parameter_is_a_422_problem(
    client: httpx.AsyncClient, url: str, params: dict[str, str]
) -> None:
    problem = refused(await client.get(url, params=params, headers=MANAGER))
    assert "NUL" in problem["detail"]


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [40, 1000, 100_000])
async def test_deeply_nested_cloudevent_data_is_refused(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection, depth: int
) -> None:
    deal = await deals.open()
    before = await event_count(pg)
    body = json.dumps(cloudevent(deal["id"], "deep", data={"x": 0})).replace(
        '{"x": 0}', nested(depth)
    )
    refused(await client.post("/v1/events", content=body, headers=ONE))
    binary = await client.post(
        "/v1/events",
        content=nested(depth),
        headers={
            **INGEST,
            "ce-specversion": "1.0",
            "ce-id": "deep-binary",
            "ce-source": "//gmail/acme",
            "ce-type": "com.dealledger.activity.email_replied",
            "ce-subject": deal["id"],
            "content-type": "application/json",
        },
    )
    refused(binary)
    assert await event_count(pg) == before


async def test_a_too_deep_cloudevent_in_a_batch_is_rejected_alone(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    good = json.dumps(cloudevent(deal["id"], "fine"))
    deep = json.dumps(cloudevent(deal["id"], "deep", data={"x": 0})).replace('{"x": 0}', nested(40))
    response = await client.post("/v1/events", content=f"[{deep},{good}]", headers=MANY)
    assert response.status_code == 207, response.text
    first, second = response.json()["results"]
    assert first["status"] == "rejected" and "deeper" in first["problem"]["detail"]
    assert second["status"] == "accepted"


async def test_deeply_nested_activity_details_are_refused(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    url = f"/v1/deals/{deal['id']}/activities"
    refused(await client.post(url, content=activity_text(nested(40)), headers=JSON))
    deep = await client.post(url, content=activity_text(nested(5000)), headers=JSON)
    assert 400 <= deep.status_code < 500, deep.text


@pytest.mark.parametrize(
    "details",
    [
        '{"note":"\\udc00"}',
        '{"\\udc00":1}',
        '{"list":["ok","\\ud800x"]}',
        '{"big":' + "1" + "0" * 400 + "}",
        '{"small":-' + "1" + "0" * 400 + "}",
    ],
    ids=["surrogate-value", "surrogate-key", "surrogate-in-list", "10^400", "-10^400"],
)
async def test_values_that_cannot_be_stored_are_refused_in_activity_details(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection, details: str
) -> None:
    deal = await deals.open()
    before = await event_count(pg)
    url = f"/v1/deals/{deal['id']}/activities"
    problem = refused(await client.post(url, content=activity_text(details), headers=JSON))
    assert "details" in problem["detail"]
    assert await event_count(pg) == before


async def test_a_lone_surrogate_in_any_text_field_is_refused(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/v1/deals", content='{"name":"Acme \\udc00","owner":"rick.rep"}', headers=JSON
    )
    refused(response)
    extra = await client.post(
        "/v1/deals", content='{"name":"Acme","owner":"rick.rep","\\udc00":1}', headers=JSON
    )
    refused(extra)


@pytest.mark.parametrize(
    ("where", "raw"),
    [
        ("data", '{"note":"\\udc00"}'),
        ("data", '{"\\udc00":1}'),
        ("data", '{"big":1' + "0" * 400 + "}"),
        ("data", '{"nan":NaN}'),
        ("data", '{"inf":1e400}'),
        ("id", '"\\udc00"'),
        ("source", '"//gmail/\\udc00"'),
    ],
)
async def test_values_that_cannot_be_stored_are_refused_in_cloudevents(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection, where: str, raw: str
) -> None:
    deal = await deals.open()
    before = await event_count(pg)
    marker = "__SPLICE__"
    event = cloudevent(deal["id"], "bad-1")
    event[where] = marker
    body = json.dumps(event).replace(f'"{marker}"', raw)
    problem = refused(await client.post("/v1/events", content=body, headers=ONE))
    assert where in problem["detail"]
    good = json.dumps(cloudevent(deal["id"], "good-1"))
    batch = await client.post("/v1/events", content=f"[{body},{good}]", headers=MANY)
    assert batch.status_code == 207, batch.text
    statuses = [r["status"] for r in batch.json()["results"]]
    assert statuses == ["rejected", "accepted"]
    assert await event_count(pg) == before + 1


@pytest.mark.parametrize(
    "moment",
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
    ],
)
async def test_times_out_of_range_are_refused_in_bodies_and_cloudevents(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection, moment: str
) -> None:
    deal = await deals.open()
    before = await event_count(pg)
    base = f"/v1/deals/{deal['id']}"
    activity = {"type": "email_replied", "occurred_at": moment}
    refused(await client.post(f"{base}/activities", json=activity))
    evidence = {
        "kind": "meeting_notes",
        "criteria": ["budget_confirmed"],
        "summary": "budget",
        "occurred_at": moment,
    }
    refused(await client.post(f"{base}/evidence", json=evidence))
    timed = cloudevent(deal["id"], "t-1", time=moment)
    assert "time" in refused(await client.post("/v1/events", json=timed, headers=ONE))["detail"]
    in_data = {
        **cloudevent(deal["id"], "t-2"),
        "type": "com.dealledger.evidence.recorded",
        "data": {**evidence, "occurred_at": moment},
    }
    problem = refused(await client.post("/v1/events", json=in_data, headers=ONE))
    assert "occurred_at" in problem["detail"]
    assert await event_count(pg) == before


@pytest.mark.parametrize(
    "moment",
    ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "1960-01-01T00:00:00Z"],
)
async def test_times_out_of_range_are_refused_in_query_parameters(
    deals: Deals, client: httpx.AsyncClient, moment: str
) -> None:
    deal = await deals.open()
    for url in (
        f"/v1/deals/{deal['id']}",
        f"/v1/deals/{deal['id']}/flags",
        "/v1/pipeline",
        "/v1/flags",
        "/v1/analytics/forecast",
        "/v1/analytics/time-in-stage",
    ):
        params = {"from": moment} if url.endswith("time-in-stage") else {"as_of": moment}
        problem = refused(await client.get(url, params=params, headers=MANAGER))
        assert "1970" in problem["detail"], url


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "1969-12-31"])
async def test_dates_out_of_range_are_refused(
    deals: Deals, client: httpx.AsyncClient, day: str
) -> None:
    refused(await client.post("/v1/deals", json={"name": "A", "owner": "o", "close_date": day}))
    deal = await deals.open()
    refused(await client.patch(f"/v1/deals/{deal['id']}", json={"close_date": day}))
    nurture = {"reason": "budget frozen", "resume_on": day}
    refused(await client.post(f"/v1/deals/{deal['id']}/nurture", json=nurture))
    step = {"description": "call", "due_date": day}
    refused(await client.put(f"/v1/deals/{deal['id']}/next-step", json=step))


async def test_a_time_without_an_offset_is_refused(deals: Deals, client: httpx.AsyncClient) -> None:
    deal = await deals.open()
    naive = "2026-11-20T10:00:00"
    body = {"type": "email_replied", "occurred_at": naive}
    refused(await client.post(f"/v1/deals/{deal['id']}/activities", json=body))
    refused(await client.get(f"/v1/deals/{deal['id']}", params={"as_of": naive}))
    timed = cloudevent(deal["id"], "naive", time=naive)
    refused(await client.post("/v1/events", json=timed, headers=ONE))


async def test_times_in_range_are_kept_as_sent(deals: Deals, client: httpx.AsyncClient) -> None:
    deal = await deals.open(close_date="8999-12-31")
    assert deal["close_date"] == "8999-12-31"
    moment = "1970-01-01T00:00:00Z"
    body = {"type": "email_replied", "occurred_at": moment}
    response = deals.saw(await client.post(f"/v1/deals/{deal['id']}/activities", json=body))
    assert response.status_code == 201, response.text
    history = await deals.read(f"/v1/deals/{deal['id']}/history")
    assert history["items"][-1]["occurred_at"] == "1970-01-01T00:00:00Z"
    verify = await deals.read(f"/v1/deals/{deal['id']}/verify")
    assert verify["valid"] is True, verify


async def test_infinite_times_never_reach_the_events_table(
    deals: Deals, pg: asyncpg.Connection
) -> None:
    deal = await deals.open()
    row = await pg.fetchrow("SELECT * FROM events WHERE stream_id = $1", deal["id"])
    columns = [name for name in row.keys() if name != "position"]  # noqa: SIM118
    for column, value in (("occurred_at", "infinity"), ("occurred_at", "-infinity")):
        values = {**dict(row), "version": 99, column: value}
        placeholders = ", ".join(
            f"${i}::text::timestamptz" if name == column else f"${i}"
            for i, name in enumerate(columns, start=1)
        )
        args = [str(values[name]) if name == column else values[name] for name in columns]
        with pytest.raises(asyncpg.CheckViolationError):
            await pg.execute(
                f"INSERT INTO events ({', '.join(columns)}) VALUES ({placeholders})", *args
            )


async def test_a_405_names_every_method_the_path_allows(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    for url, allowed in (
        ("/v1/deals", {"GET", "POST"}),
        (f"/v1/deals/{deal['id']}", {"GET", "PATCH"}),
        (f"/v1/deals/{deal['id']}/next-step", {"PUT"}),
        ("/v1/keys", {"GET", "POST"}),
        ("/healthz", {"GET"}),
    ):
        response = await client.request("DELETE", url, headers=KEYS["admin"].headers)
        assert response.status_code == 405, (url, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert {m.strip() for m in response.headers["allow"].split(",")} == allowed, url


# -- item 7: never silently rewritten ---------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "1e-400",
        "9007199254740992",
        "9007199254740993",
        "-9007199254740993",
        "1e300",
        "-1e20",
        "0.1000000000000000055511151231257827",
        "9007199254740993.0",
        "1.00000000000000000001",
    ],
)
async def test_numbers_that_would_change_on_the_way_in_are_refused(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection, number: str
) -> None:
    deal = await deals.open()
    before = await event_count(pg)
    url = f"/v1/deals/{deal['id']}/activities"
    details = f'{{"x":{{"n":[{number}]}}}}'
    problem = refused(await client.post(url, content=activity_text(details), headers=JSON))
    assert "details.x.n[0]" in problem["detail"], problem
    data = json.dumps(cloudevent(deal["id"], "n-1")).replace('"data": {}', f'"data": {details}')
    problem = refused(await client.post("/v1/events", content=data, headers=ONE))
    assert "data.x.n[0]" in problem["detail"], problem
    assert await event_count(pg) == before


async def test_numbers_a_double_holds_exactly_are_stored_and_verified_as_sent(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    deal = await deals.open()
    numbers = '{"max":9007199254740991,"min":-9007199254740991,"tenth":0.1,"tiny":1.5e-7}'
    url = f"/v1/deals/{deal['id']}/activities"
    response = deals.saw(await client.post(url, content=activity_text(numbers), headers=JSON))
    assert response.status_code == 201, response.text
    history = await deals.read(f"/v1/deals/{deal['id']}/history")
    assert history["items"][-1]["data"]["details"] == json.loads(numbers)
    assert (await deals.read(f"/v1/deals/{deal['id']}/verify"))["valid"] is True
    # An edit to a number no double holds (the API refuses those) hashes like the original's
    # nearest double: verify must still catch it.
    for edit in ("0.10000000000000000001", "0.1000000000000000055511151231257827"):
        await pg.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_delete")
        await pg.execute(
            "UPDATE events SET data = jsonb_set(data, '{details,tenth}', $2::jsonb)"
            " WHERE position = $1",
            history["items"][-1]["position"],
            edit,
        )
        await pg.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_delete")
        verify = await deals.read(f"/v1/deals/{deal['id']}/verify")
        assert verify["valid"] is False, verify
        assert "details.tenth" in verify["reason"]


# -- item 8: the size of one event -------------------------------------------------------------


async def test_a_command_whose_event_is_over_the_cap_is_413(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    deal = await deals.open()
    before = await event_count(pg)
    url = f"/v1/deals/{deal['id']}/activities"
    body = {"type": "email_replied", "occurred_at": WHEN, "details": {"text": "x" * 100 * KIB}}
    problem = refused(await client.post(url, json=body), 413)
    assert problem["type"] == "/problems/event-too-large"
    assert "65,536" in problem["detail"]
    assert await event_count(pg) == before
    small = {**body, "details": {"text": "x" * 60 * KIB}}
    assert (await client.post(url, json=small)).status_code == 201


async def test_a_cloudevent_over_the_cap_is_rejected_alone(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    deal = await deals.open()
    before = await event_count(pg)
    big = cloudevent(deal["id"], "big", data={"text": "é" * 40 * KIB})  # 80 KiB in UTF-8
    problem = refused(await client.post("/v1/events", json=big, headers=ONE), 413)
    assert problem["type"] == "/problems/event-too-large" and problem["id"] == "big"
    batch = [big, cloudevent(deal["id"], "small", data={"text": "x" * KIB})]
    response = await client.post("/v1/events", json=batch, headers=MANY)
    assert response.status_code == 207, response.text
    rejected, accepted = response.json()["results"]
    assert rejected["status"] == "rejected" and rejected["problem"]["status"] == 413
    assert accepted["status"] == "accepted"
    assert await event_count(pg) == before + 1


# -- item 10: cheap refusals and safe headers --------------------------------------------------


async def test_malformed_tokens_are_refused_without_a_lookup_and_unknown_ones_once(
    anonymous: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []

    async def counted(connection: Any, token: str) -> Any:
        lookups.append(token)
        return await find_key(connection, token)

    monkeypatch.setattr("app.api.auth.find_key", counted)
    for token in ("not-a-dealledger-key", "dl_", "dl_has space", "dl_" + "a" * 101, "dl_a.b"):
        response = await anonymous.get("/v1/deals", headers={"Authorization": f"Bearer {token}"})
        refused(response, 401)
    assert lookups == []
    unknown = {"Authorization": "Bearer dl_" + "A" * 43}
    for _ in range(20):
        refused(await anonymous.get("/v1/deals", headers=unknown), 401)
    assert len(lookups) == 1
    for _ in range(3):
        assert (await anonymous.get("/v1/deals", headers=KEYS["rep"].headers)).status_code == 200
    # A valid key is looked up once, then trusted for DEALLEDGER_KEY_CACHE_SECONDS (5 s here).
    assert len(lookups) == 2


async def test_every_response_says_nosniff_and_a_new_key_is_not_cached(
    deals: Deals, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    responses = [
        await anonymous.get("/healthz"),
        await anonymous.get("/v1/deals"),
        await client.get(f"/v1/deals/{deal['id']}"),
        await client.get("/v1/deals/not-a-uuid"),
        await client.get("/no/such/path"),
        await client.delete("/v1/deals"),
        await client.post("/v1/deals", json={}),
    ]
    for response in responses:
        assert response.headers.get("x-content-type-options") == "nosniff", response.url
    admin = KEYS["admin"].headers
    created = await client.post("/v1/keys", json={"name": "n", "role": "rep"}, headers=admin)
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
