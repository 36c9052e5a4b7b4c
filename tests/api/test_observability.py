"""/metrics names what an operator watches (projection lag in events and seconds, webhook
deliveries, append and request latency), and every log line carries its request's id."""

from __future__ import annotations

import io
import json
import logging

import httpx

from app.telemetry import JsonFormatter
from tests.api.conftest import Deals


async def test_metrics_cover_projections_webhooks_and_latencies(
    client: httpx.AsyncClient, deals: Deals
) -> None:
    await deals.open()
    text = (await client.get("/metrics")).text
    for line in (
        'dealledger_projection_lag_events{projection="deals"}',
        'dealledger_projection_lag_seconds{projection="flags"}',
        'dealledger_projection_lag_events{projection="webhooks"}',
        'dealledger_projection_stopped{projection="log_tree"}',
        "dealledger_oldest_transaction_seconds",
        'dealledger_webhook_deliveries{status="pending"}',
        "dealledger_webhook_due_seconds",
        "dealledger_append_seconds_count",
        'dealledger_request_seconds_count{method="POST",route="/v1/deals",status="201"}',
        "# TYPE dealledger_webhook_attempts_total counter",
        "# TYPE dealledger_webhook_delivery_lag_seconds histogram",
        "# TYPE dealledger_projection_errors_total counter",
    ):
        assert line in text, line


async def test_each_response_names_its_request_id(client: httpx.AsyncClient) -> None:
    given = await client.get("/v1/deals", headers={"X-Request-ID": "req-42"})
    assert given.headers["x-request-id"] == "req-42"
    made = await client.get("/v1/deals")
    assert len(made.headers["x-request-id"]) == 36


async def test_log_lines_are_json_with_the_request_id(client: httpx.AsyncClient) -> None:
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dealledger.http")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        await client.get("/v1/deals", headers={"X-Request-ID": "req-7"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    (line,) = [json.loads(text) for text in written.getvalue().splitlines()]
    assert line["request_id"] == "req-7"
    assert line["message"] == "GET /v1/deals 200" and line["level"] == "info"
    assert line["duration_ms"] >= 0 and line["logger"] == "dealledger.http"
