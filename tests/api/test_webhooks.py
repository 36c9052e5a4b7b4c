"""Webhooks through the HTTP API, delivered to a real receiver on loopback that checks every
request with standardwebhooks' own Webhook.verify."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.db import asyncpg_dsn
from app.projections.registry import PROJECTIONS
from app.projections.runner import apply_next_batch, rebuild
from app.projections.webhook_outbox import WebhookOutbox
from app.service.webhooks import DeliveryPolicy, DeliveryWorker
from app.settings import Settings
from tests.api.conftest import MANAGER, Deals, criteria_of
from tests.keys import KEYS
from tests.receiver import Receiver, receiving
from tests.support import app_client

ADMIN = KEYS["admin"].headers
FAST = (0.0, 0.05, 0.05, 0.05)


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhooks_allow_http": True,
        "webhooks_allowed_hosts": ("127.0.0.1",),
        "webhooks_retry_schedule": FAST,
        "webhooks_timeout_seconds": 2,
        "webhooks_lease_seconds": 5,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The service with its projector and a delivery worker, allowed to call loopback."""
    async with app_client(database_url, settings()) as client:
        yield client


async def subscribe(http: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "event_types": ["*"], **fields}
    response = await http.post("/v1/webhooks", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(http: httpx.AsyncClient, webhook_id: str, **params: Any) -> list[Any]:
    response = await http.get(f"/v1/webhooks/{webhook_id}/deliveries", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def settled(
    http: httpx.AsyncClient, webhook_id: str, count: int, within: float = 20
) -> list[Any]:
    """The endpoint's deliveries once `count` exist and none is pending."""
    async with asyncio.timeout(within):
        while True:
            items = await deliveries(http, webhook_id)
            if len(items) >= count and all(d["status"] != "pending" for d in items):
                return items
            await asyncio.sleep(0.05)


async def walk_to_negotiation(deals: Deals) -> dict[str, Any]:
    deal = await deals.open(amount="48000", currency="EUR", close_date="2027-03-31")
    for here, there in (
        ("discovery", "qualification"),
        ("qualification", "proposal"),
        ("proposal", "negotiation"),
    ):
        await deals.make_ready_for(deal["id"], here)
        if there == "proposal":
            body = {"name": "Erin Buyer", "role": "economic_buyer"}
            added = await deals.client.post(f"/v1/deals/{deal['id']}/stakeholders", json=body)
            assert added.status_code == 201, added.text
        moved = await deals.command(deal["id"], "advance", {"to_stage": there})
        assert moved.status_code == 200, moved.text
    return deal


# ---- subscriptions ----


async def test_a_subscription_shows_its_secret_once_and_can_be_changed_and_deleted(
    http: httpx.AsyncClient,
) -> None:
    created = await subscribe(
        http,
        "https://hooks.example.com/dealledger",
        event_types=["deal.stage_entered"],
        filters={"stage": ["negotiation"]},
        description="crm",
    )
    assert created["secret"].startswith("whsec_")
    Webhook(created["secret"])  # a secret the library takes
    one = (await http.get(f"/v1/webhooks/{created['id']}", headers=ADMIN)).json()
    assert "secret" not in one and one["filters"] == {"stage": ["negotiation"]}
    listed = (await http.get("/v1/webhooks", headers=ADMIN)).json()
    assert [w["id"] for w in listed["items"]] == [created["id"]]
    assert all("secret" not in w for w in listed["items"])

    changed = await http.patch(
        f"/v1/webhooks/{created['id']}",
        json={"enabled": False, "event_types": ["deal.won", "flag.raised"]},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["enabled"] is False
    assert changed.json()["event_types"] == ["deal.won", "flag.raised"]
    again = await http.patch(f"/v1/webhooks/{created['id']}", json={"enabled": True}, headers=ADMIN)
    assert again.json()["enabled"] is True and again.json()["disabled_reason"] is None
    for body in ({"url": "https://10.0.0.1/x"}, {"description": None}, {"filters": {"x": ["y"]}}):
        refused = await http.patch(f"/v1/webhooks/{created['id']}", json=body, headers=ADMIN)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"

    gone = await http.delete(f"/v1/webhooks/{created['id']}", headers=ADMIN)
    assert gone.status_code == 204
    missing = await http.get(f"/v1/webhooks/{created['id']}", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_the_manager_preset_takes_late_stage_entries_and_critical_flags(
    http: httpx.AsyncClient,
) -> None:
    created = await subscribe(
        http, "https://hooks.example.com/m", preset="manager", event_types=None
    )
    assert created["event_types"] == ["deal.stage_entered", "flag.raised"]
    assert created["filters"] == {"stage": ["negotiation", "closing"], "severity": ["critical"]}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"event_types": ["deal.exploded"]}, "event_types"),
        ({"filters": {"colour": ["red"]}}, "unknown filter"),
        ({"filters": {"stage": ["penthouse"]}}, "penthouse"),
        ({"filters": {"severity": []}}, "at least one"),
        ({"preset": "manager"}, "either a preset"),
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "credentials"),
        ({"url": "https://10.1.2.3/x"}, "private"),
        ({"url": "https://169.254.169.254/latest/meta-data"}, "link-local"),
        ({"url": "https://[::1]:8443/x"}, "loopback"),
        ({"url": "https://[::ffff:192.168.0.1]/x"}, "private"),
        ({"url": "https://127.0.0.2/x"}, "loopback"),
        ({"url": "https://0.0.0.0/x"}, "unspecified"),
    ],
)
async def test_bad_subscriptions_are_problems_naming_what_is_wrong(
    http: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    payload = {"url": "https://hooks.example.com/x", "event_types": ["*"], **body}
    response = await http.post("/v1/webhooks", json=payload, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert fragment in response.text


async def test_plain_http_and_loopback_need_the_operator(database_url: str) -> None:
    async with app_client(database_url, Settings(webhooks_deliver=False)) as strict:
        body = {"url": "http://hooks.example.com/x", "event_types": ["*"]}
        refused = await strict.post("/v1/webhooks", json=body, headers=ADMIN)
        assert refused.status_code == 422 and "DEALLEDGER_WEBHOOKS_ALLOW_HTTP" in refused.text
        body = {"url": "https://127.0.0.1:9/x", "event_types": ["*"]}
        refused = await strict.post("/v1/webhooks", json=body, headers=ADMIN)
        assert refused.status_code == 422 and "ALLOWED_HOSTS" in refused.text


# ---- delivery ----


async def test_each_matching_event_arrives_once_signed_in_log_order(
    http: httpx.AsyncClient,
) -> None:
    async with receiving() as receiver:
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered", "deal.won"])
        other = await subscribe(
            http, receiver.url, event_types=["deal.stage_entered"], filters={"stage": ["proposal"]}
        )
        manager = await subscribe(http, receiver.url, preset="manager", event_types=None)
        deals = Deals(http)
        first = await walk_to_negotiation(deals)
        second = await deals.open(name="Second Co", owner="olga")
        # opened, qualification, proposal, negotiation (first) + opened (second); proposal (other)
        await settled(http, hook["id"], 5)
        await settled(http, other["id"], 1)
        await settled(http, manager["id"], 1)
        await receiver.wait_for(7)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert len(receiver.requests) == 7
        heard: dict[str, list[Any]] = {hook["id"]: [], other["id"]: [], manager["id"]: []}
        for request in receiver.requests:  # each request verifies with exactly one secret
            verified = []
            for sub in (hook, other, manager):
                try:
                    verified.append(Webhook(sub["secret"]).verify(request.body, request.headers))
                    heard[sub["id"]].append(verified[-1])
                except WebhookVerificationError:
                    pass
            assert len(verified) == 1
        for_hook, for_other = heard[hook["id"]], heard[other["id"]]
        assert [b["data"]["to_stage"] for b in heard[manager["id"]]] == ["negotiation"]
        assert len({r.message_id for r in receiver.requests}) == 7
        stages = [
            (b["data"]["deal"]["id"], b["data"]["to_stage"])
            for b in for_hook
            if b["data"]["deal"]["id"] == first["id"]
        ]
        assert stages == [
            (first["id"], "discovery"),
            (first["id"], "qualification"),
            (first["id"], "proposal"),
            (first["id"], "negotiation"),
        ]
        positions = [
            b["data"]["position"] for b in for_hook if b["data"]["deal"]["id"] == first["id"]
        ]
        assert positions == sorted(positions)
        assert [b["data"]["deal"]["id"] for b in for_hook].count(second["id"]) == 1
        assert [b["data"]["to_stage"] for b in for_other] == ["proposal"]
        body = for_hook[-1] if for_hook[-1]["data"]["deal"]["id"] == first["id"] else for_hook[-2]
        assert body["type"] == "deal.stage_entered"
        deal = body["data"]["deal"]
        assert deal["name"] == "Acme rollout" and deal["owner"] == "rick.rep"
        assert deal["amount"] == "48000" and deal["stage"] == "negotiation"
        assert deal["link"].endswith(f"/v1/deals/{first['id']}")
        assert set(body) == {"type", "timestamp", "data"}


async def test_500_twice_then_200_is_delivered_on_the_third_attempt_signed_afresh(
    database_url: str,
) -> None:
    ticks = itertools.count()
    start = datetime.now(UTC)

    def clock() -> datetime:  # a second passes between attempts, without waiting for it
        return start + timedelta(seconds=next(ticks))

    quiet = settings(webhooks_deliver=False)
    async with (
        receiving(Receiver(answers=[500, 500])) as receiver,
        app_client(database_url, quiet) as http,
    ):
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await Deals(http).open()
        worker = DeliveryWorker(
            asyncpg_dsn(database_url), DeliveryPolicy.of(quiet), poll_interval=0.05, clock=clock
        )
        task = asyncio.create_task(worker.run())
        try:
            (delivery,) = await settled(http, hook["id"], 1)
        finally:
            task.cancel()
        assert delivery["status"] == "delivered" and delivery["attempts"] == 3
        assert delivery["last_status_code"] == 200
        assert len(receiver.requests) == 3
        bodies = receiver.verified(hook["secret"])
        assert bodies[0] == bodies[1] == bodies[2]
        assert len({r.message_id for r in receiver.requests}) == 1
        stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
        assert stamps == sorted(set(stamps))
        signatures = {r.headers["webhook-signature"] for r in receiver.requests}
        assert len(signatures) == 3


async def test_a_deal_waits_for_its_earlier_delivery_while_that_one_is_retried(
    database_url: str,
) -> None:
    # Retries slow enough that the advance is recorded while the opening is still failing.
    patient = settings(webhooks_retry_schedule=(0, 0.4, 0.4, 0.4))
    async with (
        receiving(Receiver(answers=[500, 500])) as receiver,
        app_client(database_url, patient) as http,
    ):
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        deals = Deals(http)
        deal = await deals.open(amount="9000", currency="EUR", close_date="2027-03-31")
        await deals.make_ready_for(deal["id"], "discovery")
        moved = await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
        assert moved.status_code == 200, moved.text
        await settled(http, hook["id"], 2)
        stages = [b["data"]["to_stage"] for b in receiver.verified(hook["secret"])]
        # The opening failed twice; the advance waited for it instead of overtaking it.
        assert stages == ["discovery", "discovery", "discovery", "qualification"]


async def test_410_gone_disables_the_endpoint_with_a_reason(http: httpx.AsyncClient) -> None:
    async with receiving(Receiver(answers=[410])) as receiver:
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await Deals(http).open()
        (delivery,) = await settled(http, hook["id"], 1)
        assert delivery["status"] == "failed" and delivery["last_status_code"] == 410
        endpoint = (await http.get(f"/v1/webhooks/{hook['id']}", headers=ADMIN)).json()
        assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]
        await Deals(http).open(name="After")
        await asyncio.sleep(0.5)
        assert len(receiver.requests) == 1  # nothing more is sent to a disabled endpoint


async def test_redirects_are_not_followed_but_tried_again(http: httpx.AsyncClient) -> None:
    receiver = Receiver(answers=[302], headers={"Location": "http://127.0.0.1:9/elsewhere"})
    async with receiving(receiver):
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await Deals(http).open()
        (delivery,) = await settled(http, hook["id"], 1)
        assert delivery["status"] == "delivered" and delivery["attempts"] == 2
        assert [r.path for r in receiver.requests] == ["/hook", "/hook"]


async def test_an_endpoint_failing_for_days_is_disabled_with_the_reason(
    http: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    async with receiving(Receiver(answers=[500])) as receiver:
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await pg.execute(
            "UPDATE webhook_endpoints SET failing_since = now() - interval '6 days'"
            " WHERE endpoint_id = $1",
            uuid.UUID(hook["id"]),
        )
        await Deals(http).open()
        await receiver.wait_for(1)
        async with asyncio.timeout(20):
            while True:
                endpoint = (await http.get(f"/v1/webhooks/{hook['id']}", headers=ADMIN)).json()
                if not endpoint["enabled"]:
                    break
                await asyncio.sleep(0.05)
        assert "every delivery attempt failed since" in endpoint["disabled_reason"]
        (delivery,) = await deliveries(http, hook["id"])
        assert delivery["status"] == "pending" and delivery["last_status_code"] == 500
        # Enabled again, its pending delivery goes out.
        again = await http.patch(
            f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=ADMIN
        )
        assert again.json()["failing_since"] is None
        (delivery,) = await settled(http, hook["id"], 1)
        assert delivery["status"] == "delivered"


async def test_a_receiver_that_never_answers_times_out(database_url: str) -> None:
    hung = Receiver(hold=asyncio.Event())  # never set while the test runs
    quick = settings(webhooks_timeout_seconds=0.3, webhooks_retry_schedule=(0, 0.05))
    async with receiving(hung) as receiver, app_client(database_url, quick) as http:
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await Deals(http).open()
        (delivery,) = await settled(http, hook["id"], 1)
        assert delivery["status"] == "failed" and delivery["attempts"] == 2
        assert delivery["last_error"] == "no answer within 0.3 s"
        assert len(receiver.requests) == 2


async def test_only_the_start_of_an_answer_is_read(http: httpx.AsyncClient) -> None:
    async with receiving(Receiver(endless=True)) as receiver:
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await Deals(http).open()
        (delivery,) = await settled(http, hook["id"], 1)
        # Reading the whole announced body would have waited past the timeout.
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1


async def test_retry_after_is_honoured(database_url: str, pg: asyncpg.Connection) -> None:
    async with (
        receiving(Receiver(answers=[503], headers={"Retry-After": "30"})) as receiver,
        app_client(database_url, settings(webhooks_retry_schedule=(0, 0.05, 600))) as http,
    ):
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await Deals(http).open()
        await receiver.wait_for(1)
        async with asyncio.timeout(20):
            while True:
                row = await pg.fetchrow(
                    "SELECT attempts, lease_token,"
                    " extract(epoch FROM next_attempt_at - last_attempt_at) AS wait"
                    " FROM webhook_deliveries WHERE endpoint_id = $1",
                    uuid.UUID(hook["id"]),
                )
                if row["lease_token"] is None:
                    break
                await asyncio.sleep(0.05)
        # The schedule says 0.05 s next; the receiver asked for 30 s (less than the longest
        # wait, 600 s), and gets them.
        assert row["attempts"] == 1 and row["wait"] >= 30


async def test_a_spent_schedule_fails_the_delivery(database_url: str) -> None:
    async with (
        receiving(Receiver(answers=[503] * 10, headers={"Retry-After": "0"})) as receiver,
        app_client(database_url, settings(webhooks_retry_schedule=(0, 0.05))) as http,
    ):
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await Deals(http).open()
        (delivery,) = await settled(http, hook["id"], 1)
        assert delivery["status"] == "failed" and delivery["attempts"] == 2
        assert delivery["last_status_code"] == 503
        endpoint = (await http.get(f"/v1/webhooks/{hook['id']}", headers=ADMIN)).json()
        assert endpoint["failing_since"] is not None and endpoint["enabled"] is True


async def test_an_address_refused_at_send_time_is_never_called(database_url: str) -> None:
    async with receiving() as receiver:
        async with app_client(database_url, settings(webhooks_deliver=False)) as http:
            hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        # The operator no longer lists 127.0.0.1: the sender refuses to connect.
        async with app_client(database_url, settings(webhooks_allowed_hosts=())) as http:
            await Deals(http).open()
            items = await deliveries(http, hook["id"])
            async with asyncio.timeout(20):
                while not items or items[0]["last_error"] is None:
                    await asyncio.sleep(0.05)
                    items = await deliveries(http, hook["id"])
            assert "loopback" in items[0]["last_error"]
        assert receiver.requests == []


async def test_a_rotated_secret_overlaps_the_new_one(http: httpx.AsyncClient) -> None:
    async with receiving() as receiver:
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        rotated = await http.post(
            f"/v1/webhooks/{hook['id']}/rotate-secret",
            json={"overlap_seconds": 3600},
            headers=ADMIN,
        )
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new != hook["secret"] and rotated.json()["previous_secret_until"]
        await Deals(http).open()
        (request,) = await receiver.wait_for(1)
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        Webhook(hook["secret"]).verify(request.body, request.headers)
        Webhook(new).verify(request.body, request.headers)

        ended = await http.post(
            f"/v1/webhooks/{hook['id']}/rotate-secret", json={"overlap_seconds": 0}, headers=ADMIN
        )
        newest = ended.json()["secret"]
        await Deals(http).open(name="Later")
        _, request = await receiver.wait_for(2)
        assert len(request.headers["webhook-signature"].split(" ")) == 1
        Webhook(newest).verify(request.body, request.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new).verify(request.body, request.headers)


async def test_a_test_message_is_sent_and_logged(http: httpx.AsyncClient) -> None:
    async with receiving() as receiver:
        hook = await subscribe(http, receiver.url, event_types=["deal.won"])
        sent = await http.post(f"/v1/webhooks/{hook['id']}/test", headers=ADMIN)
        assert sent.status_code == 202, sent.text
        (request,) = await receiver.wait_for(1)
        (body,) = receiver.verified(hook["secret"])
        assert body["type"] == "webhook.test"
        (delivery,) = await settled(http, hook["id"], 1)
        assert delivery["event_type"] == "webhook.test" and delivery["status"] == "delivered"
        assert delivery["message_id"] == request.message_id


async def test_a_delivery_can_be_sent_again_and_the_log_replayed(http: httpx.AsyncClient) -> None:
    async with receiving() as receiver:
        deals = Deals(http)
        before = await deals.open(name="Before")
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        await deals.open(name="After")
        (delivery,) = await settled(http, hook["id"], 1)
        assert len(receiver.verified(hook["secret"])) == 1

        again = await http.post(
            f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry", headers=ADMIN
        )
        assert again.status_code == 202, again.text
        await receiver.wait_for(2)
        assert receiver.requests[0].message_id == receiver.requests[1].message_id

        replayed = await http.post(
            f"/v1/webhooks/{hook['id']}/replay", params={"from_position": 1}, headers=ADMIN
        )
        assert replayed.status_code == 202, replayed.text
        assert replayed.json()["enqueued"] == 2  # the deal opened before it subscribed, too
        await receiver.wait_for(4)
        names = [b["data"]["deal"]["name"] for b in receiver.verified(hook["secret"])]
        assert sorted(names[2:]) == ["After", "Before"]
        assert before["id"] in {b["data"]["deal"]["id"] for b in receiver.verified(hook["secret"])}

        missing = await http.post(
            f"/v1/webhooks/{hook['id']}/replay", params={"from_position": 0}, headers=ADMIN
        )
        assert missing.status_code == 422
        unknown = await http.post(
            f"/v1/webhooks/{hook['id']}/deliveries/{hook['id']}/retry", headers=ADMIN
        )
        assert unknown.status_code == 404
        failed = await deliveries(http, hook["id"], status="failed")
        assert failed == []


async def test_critical_flags_and_retractions_reach_the_manager(
    http: httpx.AsyncClient, database_url: str, pg: asyncpg.Connection
) -> None:
    async with receiving() as receiver:
        hook = await subscribe(
            http,
            receiver.url,
            event_types=["flag.raised", "evidence.retracted"],
            filters={"severity": ["critical"]},
        )
        deals = Deals(http)
        deal = await deals.open(amount="9000", currency="EUR", close_date="2027-03-31")
        evidence = await deals.evidence(deal["id"], *criteria_of("discovery"))
        moved = await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
        assert moved.status_code == 200, moved.text
        retracted = await deals.command(
            deal["id"],
            f"evidence/{evidence}/retract",
            {"reason": "the budget did not exist"},
            headers=MANAGER,
        )
        assert retracted.status_code in (200, 201), retracted.text
        await receiver.wait_for(2)
        await asyncio.sleep(0.3)
        bodies = receiver.verified(hook["secret"])
        kinds = sorted(b["type"] for b in bodies)
        assert kinds == ["evidence.retracted", "flag.raised"], bodies
        (flag,) = [b for b in bodies if b["type"] == "flag.raised"]
        assert flag["data"]["kind"] == "stage_evidence_retracted"
        assert flag["data"]["severity"] == "critical"
        assert flag["data"]["deal"]["id"] == deal["id"]

        # Rebuilding the flags read model announces nothing again.
        recorded = await pg.fetchval("SELECT count(*) FROM flag_raisings")
        await rebuild(asyncpg_dsn(database_url), PROJECTIONS["flags"], poll_interval=0.02)
        assert await pg.fetchval("SELECT count(*) FROM flag_raisings") == recorded
        await Deals(http).open(name="Later")  # the outbox has moved past the rebuild
        await settled(http, hook["id"], 2)
        await asyncio.sleep(0.3)
        assert len(receiver.requests) == 2


async def test_two_workers_never_send_one_delivery_twice(database_url: str) -> None:
    quiet = settings(webhooks_deliver=False)
    async with receiving() as receiver, app_client(database_url, quiet) as http:
        hook = await subscribe(http, receiver.url, event_types=["deal.stage_entered"])
        deals = Deals(http)
        opened = await asyncio.gather(*(deals.open(name=f"Deal {n}") for n in range(30)))
        policy = DeliveryPolicy.of(quiet)
        workers = [
            asyncio.create_task(
                DeliveryWorker(asyncpg_dsn(database_url), policy, poll_interval=0.02).run()
            )
            for _ in range(2)
        ]
        try:
            await settled(http, hook["id"], len(opened))
        finally:
            for task in workers:
                task.cancel()
        ids = [r.message_id for r in receiver.requests]
        assert len(ids) == len(set(ids)) == len(opened)


async def test_with_no_endpoint_enabled_the_outbox_passes_the_log_unread(
    database_url: str, pg: asyncpg.Connection
) -> None:
    """After a bulk load, or before anyone subscribes, nobody can hear the log's events (an
    endpoint hears what was recorded after it was created): the outbox moves past them in one
    step instead of reading them all; an endpoint enabled again is heard from then on."""
    outbox = WebhookOutbox()
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute(
            "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
            outbox.name,
        )
        async with app_client(database_url, settings(run_projector=False)) as http:
            hook = await subscribe(http, "https://hooks.example.com/x", event_types=["*"])
            paused = await http.patch(
                f"/v1/webhooks/{hook['id']}", json={"enabled": False}, headers=ADMIN
            )
            assert paused.status_code == 200, paused.text
            deals = Deals(http)
            for n in range(40):
                deal = await deals.open(name=f"Quiet {n}")
                replied = await http.post(
                    f"/v1/deals/{deal['id']}/activities",
                    json={"type": "email_replied", "occurred_at": datetime.now(UTC).isoformat()},
                )
                assert replied.status_code == 201, replied.text
            events = await pg.fetchval("SELECT count(*) FROM events")
            assert events >= 80
            # A batch of 10 would have taken eight batches and every event read.
            assert await apply_next_batch(connection, outbox, 10) == events
            assert await apply_next_batch(connection, outbox, 10) == 0
            at = await pg.fetchval(
                "SELECT position FROM projection_checkpoints WHERE name = $1", outbox.name
            )
            assert at == await pg.fetchval("SELECT max(position) FROM events")
            assert await deliveries(http, hook["id"]) == []

            resumed = await http.patch(
                f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=ADMIN
            )
            assert resumed.status_code == 200, resumed.text
            later = await deals.open(name="Heard Co")
            # Read again once someone listens: the deal opened since, and nothing before it.
            opened = await pg.fetchval("SELECT count(*) FROM events") - events
            assert await apply_next_batch(connection, outbox, 10) == opened
            heard = await deliveries(http, hook["id"])
            assert [(d["event_type"], d["deal_id"]) for d in heard] == [
                ("deal.stage_entered", later["id"])
            ]
    finally:
        await connection.close()
