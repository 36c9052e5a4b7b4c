"""Body limits: over-limit requests are 413 before parsing, with or without Content-Length."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest

from tests.api.conftest import WHEN, Deals
from tests.keys import KEYS

MIB = 1024 * 1024


async def event_count(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM events"))


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def streamed(body: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks(body):
        yield chunk


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_an_over_limit_body_is_413_and_stores_nothing(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection, declared: bool
) -> None:
    deal = await deals.open()
    before = await event_count(pg)
    body = json.dumps(
        {"type": "email_replied", "occurred_at": WHEN, "details": {"text": "x" * (2 * MIB)}}
    ).encode()
    url = f"/v1/deals/{deal['id']}/activities"
    headers = {"content-type": "application/json"}
    if declared:
        response = await client.post(url, content=body, headers=headers)
    else:
        response = await client.post(url, content=streamed(body), headers=headers)
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "1,048,576 bytes" in response.json()["detail"]
    assert await event_count(pg) == before


async def test_the_batch_endpoint_has_its_own_larger_limit(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    deal = await deals.open()
    note = "y" * 3000
    batch = [
        {
            "specversion": "1.0",
            "id": f"m-{i}",
            "source": "//mail",
            "type": "com.dealledger.activity.email_replied",
            "subject": deal["id"],
            "data": {"note": note},
        }
        for i in range(600)
    ]
    body = json.dumps(batch).encode()
    assert MIB < len(body) < 10 * MIB
    headers = {**KEYS["ingest"].headers, "content-type": "application/cloudevents-batch+json"}
    ok = await client.post("/v1/events", content=streamed(body), headers=headers)
    assert ok.status_code == 200, ok.text[:300]
    assert ok.json()["accepted"] == 600
    before = await event_count(pg)
    huge = json.dumps(batch * 6).encode()
    refused = await client.post("/v1/events", content=streamed(huge), headers=headers)
    assert refused.status_code == 413
    assert await event_count(pg) == before


async def test_clients_cannot_set_server_owned_fields(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    response = await client.post(
        f"/v1/deals/{deal['id']}/evidence",
        json={
            "kind": "email",
            "criteria": ["budget_confirmed"],
            "summary": "s",
            "occurred_at": WHEN,
            "recorded_at": WHEN,
            "version": 99,
            "recorded_by": "someone else",
        },
    )
    assert response.status_code == 422
    named = {e["location"] for e in response.json()["errors"]}
    assert named == {"body.recorded_at", "body.version", "body.recorded_by"}
