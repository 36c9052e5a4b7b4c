"""API keys and roles: every route x every role, and the ways a request can lack a key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from tests.keys import KEYS
from tests.support import served

SPEC = json.loads((Path(__file__).parents[2] / "openapi" / "openapi.json").read_text())
READERS = {"rep", "manager", "auditor", "admin"}
DEAL_WRITERS = {"rep", "manager", "admin"}
BUYER_WRITERS = {"ingest", "rep", "manager", "admin"}
ADMIN = {"admin"}
TEAM = {"manager", "auditor", "admin"}

# Who may call what, written out independently of the code's permission table.
MATRIX: dict[tuple[str, str], set[str]] = {
    ("GET", "/v1/deals"): READERS,
    ("POST", "/v1/deals"): DEAL_WRITERS,
    ("GET", "/v1/deals/{deal_id}"): READERS,
    ("PATCH", "/v1/deals/{deal_id}"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/activities"): BUYER_WRITERS,
    ("POST", "/v1/deals/{deal_id}/evidence"): BUYER_WRITERS,
    ("POST", "/v1/deals/{deal_id}/evidence/{evidence_id}/retract"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/advance"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/regress"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/disqualify"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/win"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/nurture"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/reactivate"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/blockers"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/blockers/{blocker_id}/resolve"): DEAL_WRITERS,
    ("PUT", "/v1/deals/{deal_id}/next-step"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/next-step/complete"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/stakeholders"): DEAL_WRITERS,
    ("PATCH", "/v1/deals/{deal_id}/stakeholders/{stakeholder_id}"): DEAL_WRITERS,
    ("POST", "/v1/deals/{deal_id}/stakeholders/{stakeholder_id}/left"): DEAL_WRITERS,
    ("GET", "/v1/deals/{deal_id}/history"): READERS,
    ("GET", "/v1/deals/{deal_id}/stage-history"): READERS,
    ("GET", "/v1/deals/{deal_id}/stage-facts"): READERS,
    ("GET", "/v1/deals/{deal_id}/provenance"): READERS,
    ("GET", "/v1/deals/{deal_id}/verify"): READERS,
    ("GET", "/v1/pipeline"): READERS,
    ("GET", "/v1/pipelines"): READERS,
    ("POST", "/v1/pipelines"): ADMIN,
    ("GET", "/v1/pipelines/{key}"): READERS,
    ("PUT", "/v1/pipelines/{key}"): ADMIN,
    ("GET", "/v1/pipelines/{key}/versions/{version}"): READERS,
    ("GET", "/v1/pipelines/{key}/diff"): READERS,
    ("POST", "/v1/pipelines/{key}/migrate"): ADMIN,
    ("POST", "/v1/deals/{deal_id}/migrate"): {"manager", "admin"},
    ("POST", "/v1/events"): {"ingest", "admin"},
    ("GET", "/v1/deals/{deal_id}/flags"): READERS,
    ("GET", "/v1/flags"): TEAM,
    ("GET", "/v1/analytics/time-in-stage"): TEAM,
    ("GET", "/v1/analytics/conversion"): TEAM,
    ("GET", "/v1/analytics/velocity"): TEAM,
    ("GET", "/v1/analytics/regressions"): TEAM,
    ("GET", "/v1/analytics/disqualifications"): TEAM,
    ("GET", "/v1/analytics/blockers"): TEAM,
    ("GET", "/v1/analytics/forecast"): TEAM,
    ("GET", "/v1/analytics/overrides"): TEAM,
    ("GET", "/v1/analytics/size-bands"): TEAM,
    ("GET", "/v1/pipeline/health"): TEAM,
    ("GET", "/v1/analytics/forecast-accuracy"): TEAM,
    ("GET", "/v1/inspections/weekly"): TEAM,
    ("GET", "/v1/inspections/monthly"): TEAM,
    ("GET", "/v1/inspections/quarterly"): TEAM,
    ("PUT", "/v1/targets/{owner}/{period}"): {"manager", "admin"},
    ("GET", "/v1/log/public-key"): READERS,
    ("GET", "/v1/log/checkpoint"): READERS,
    ("GET", "/v1/log/checkpoints"): READERS,
    ("GET", "/v1/log/proof/inclusion"): READERS,
    ("GET", "/v1/log/proof/consistency"): READERS,
    ("GET", "/v1/log/entries"): TEAM,
    ("GET", "/v1/log/leaves"): TEAM,
    ("GET", "/v1/keys"): ADMIN,
    ("POST", "/v1/keys"): ADMIN,
    ("POST", "/v1/keys/{key_id}/revoke"): ADMIN,
    ("GET", "/v1/webhooks"): ADMIN,
    ("POST", "/v1/webhooks"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("PATCH", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("DELETE", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/test"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/replay"): ADMIN,
}
ROUTES = sorted(MATRIX)


def test_the_matrix_covers_every_v1_operation() -> None:
    documented = {
        (method.upper(), path)
        for path, operations in SPEC["paths"].items()
        if path.startswith("/v1")
        for method in operations
    }
    assert documented == set(MATRIX)


def url_of(path: str) -> str:
    return path.format(
        deal_id=uuid.uuid4(),
        evidence_id=uuid.uuid4(),
        blocker_id=uuid.uuid4(),
        stakeholder_id=uuid.uuid4(),
        key_id=uuid.uuid4(),
        webhook_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        key="default",
        version=1,
        owner="rick.rep",
        period="2026-Q3",
    )


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    body: dict[str, object] | None = {} if method != "GET" else None
    return await client.request(method, url_of(path), json=body, headers=headers)


@pytest.mark.parametrize("role", sorted(KEYS))
async def test_each_role_may_do_exactly_what_the_matrix_says(
    anonymous: httpx.AsyncClient, role: str
) -> None:
    wrong = []
    for method, path in ROUTES:
        response = await call(anonymous, method, path, KEYS[role].headers)
        allowed = role in MATRIX[(method, path)]
        if allowed and response.status_code in (401, 403):
            wrong.append(f"{method} {path}: {response.status_code}, expected allowed")
        if not allowed:
            if response.status_code != 403:
                wrong.append(f"{method} {path}: {response.status_code}, expected 403")
            elif response.headers["content-type"] != "application/problem+json":
                wrong.append(f"{method} {path}: 403 without problem+json")
    assert wrong == []


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic cmljazpzZWNyZXQ=",
        "Bearer",
        "Bearer ",
        "Bearer dl_not_a_key",
        "Bearer " + "x" * 600,
        "dl_test_rep_token",
    ],
)
async def test_requests_without_a_valid_key_are_401_everywhere(
    anonymous: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path in ROUTES:
        response = await call(anonymous, method, path, headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith('Bearer realm="dealledger"')
        assert response.json()["detail"]


async def test_health_needs_no_key(anonymous: httpx.AsyncClient) -> None:
    assert (await anonymous.get("/healthz")).status_code == 200
    assert (await anonymous.get("/readyz")).status_code == 200


async def test_admin_creates_a_key_that_works_at_once_and_revoking_stops_it(
    anonymous: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    admin = KEYS["admin"].headers
    created = await anonymous.post(
        "/v1/keys", json={"name": "calendar-sync", "role": "ingest"}, headers=admin
    )
    assert created.status_code == 201, created.text
    key = created.json()
    token = key["token"]
    assert key["role"] == "ingest" and token.startswith(key["hint"])
    assert key["created_by"] == str(KEYS["admin"].key_id)
    bearer = {"Authorization": f"Bearer {token}"}

    deal = await anonymous.post("/v1/deals", json={"name": "D", "owner": "o"}, headers=admin)
    activity = {"type": "meeting_held", "occurred_at": "2026-11-20T10:00:00Z"}
    url = f"/v1/deals/{deal.json()['id']}/activities"
    assert (await anonymous.post(url, json=activity, headers=bearer)).status_code == 201
    assert (await anonymous.get("/v1/deals", headers=bearer)).status_code == 403

    # The token itself is nowhere in the database: only its SHA-256.
    rows = await pg.fetch("SELECT * FROM api_keys WHERE key_id = $1", uuid.UUID(key["key_id"]))
    assert token not in repr([dict(r) for r in rows])
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).digest()
    listed = (await anonymous.get("/v1/keys", headers=admin, params={"limit": 500})).json()
    assert token not in json.dumps(listed)
    assert {k["name"] for k in listed["items"]} >= {"calendar-sync", "rick.rep"}

    revoked = await anonymous.post(f"/v1/keys/{key['key_id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    after = await anonymous.post(url, json=activity, headers=bearer)
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]


async def test_keys_list_pages_with_a_cursor(anonymous: httpx.AsyncClient) -> None:
    admin = KEYS["admin"].headers
    for i in range(3):
        body = {"name": f"extra-{i}", "role": "auditor"}
        assert (await anonymous.post("/v1/keys", json=body, headers=admin)).status_code == 201
    names: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await anonymous.get("/v1/keys", params=params, headers=admin)).json()
        names += [k["name"] for k in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert names == [*(k.name for k in KEYS.values()), "extra-0", "extra-1", "extra-2"]


async def test_unknown_role_is_422_naming_the_roles(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.post(
        "/v1/keys", json={"name": "x", "role": "god"}, headers=KEYS["admin"].headers
    )
    assert response.status_code == 422
    assert "ingest" in response.text and "auditor" in response.text


async def test_events_record_the_acting_key(client: httpx.AsyncClient) -> None:
    ingest = KEYS["ingest"]
    deal = (await client.post("/v1/deals", json={"name": "D", "owner": "o"})).json()
    activity = {"type": "email_replied", "occurred_at": "2026-11-20T10:00:00Z"}
    url = f"/v1/deals/{deal['id']}/activities"
    assert (await client.post(url, json=activity, headers=ingest.headers)).is_success
    history = (await client.get(f"/v1/deals/{deal['id']}/history")).json()["items"]
    assert history[-1]["metadata"]["actor"] == {
        "id": str(ingest.key_id),
        "name": "gmail-sync",
        "role": "ingest",
    }


async def test_dev_mode_lets_anonymous_requests_act_as_admin(database_url: str) -> None:
    application = create_app(Settings(dev_mode=True), database_url=database_url)
    async with served(application) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/v1/keys")).status_code == 200
            # A key, when sent, still counts: its role, not admin.
            rep = await http.get("/v1/keys", headers=KEYS["rep"].headers)
            assert rep.status_code == 403


async def test_a_key_revoked_by_another_process_stops_working_within_the_cache_time(
    database_url: str, pg: asyncpg.Connection
) -> None:
    from app.keys import create_key

    key, token = await create_key(pg, role="rep", name="elsewhere")
    bearer = {"authorization": f"Bearer {token}"}
    application = create_app(Settings(key_cache_seconds=0.5), database_url=database_url)
    async with served(application) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/v1/deals", headers=bearer)).status_code == 200
            # Revoked by another process (the CLI, another server): this one trusted the key
            # it looked up a moment ago, for at most key_cache_seconds...
            await pg.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", key.key_id)
            cached = await http.get("/v1/deals", headers=bearer)
            assert cached.status_code == 200
            # ...then looks it up again and refuses it.
            await asyncio.sleep(0.6)
            refused = await http.get("/v1/deals", headers=bearer)
            assert refused.status_code == 401
            assert "revoked" in refused.json()["detail"]
