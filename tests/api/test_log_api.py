"""The verifiable log through HTTP: the service signs checkpoints with its own key, proves
inclusion and consistency, names each event's leaf, and a deal whose last event was deleted
behind the triggers no longer verifies."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.events import merkle
from app.events.notes import TreeHead, Verifier, open_checkpoint
from app.service.log_audit import audit_http
from app.settings import Settings
from tests.api.conftest import Deals
from tests.keys import KEYS
from tests.support import app_client

AUDITOR = KEYS["auditor"].headers


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The service signing a checkpoint after every batch of the sequencer."""
    settings = Settings(checkpoint_every_events=1, checkpoint_every_seconds=3600)
    async with app_client(database_url, settings) as client:
        yield client


async def signed_at_least(http: httpx.AsyncClient, size: int) -> str:
    """The latest checkpoint once the sequencer has signed `size` events or more."""
    for _ in range(500):
        response = await http.get("/v1/log/checkpoint")
        if response.status_code == 200:
            note = response.text
            if int(note.split("\n")[1]) >= size:
                return note
        await asyncio.sleep(0.02)
    raise AssertionError(f"no checkpoint of {size} events was signed")


async def walk(http: httpx.AsyncClient) -> tuple[Deals, dict[str, Any]]:
    deals = Deals(http)
    deal = await deals.open(name="Proven Ltd")
    await deals.evidence(deal["id"], "budget_confirmed")
    await deals.open(name="Second Co")
    return deals, deal


async def test_checkpoints_are_signed_with_the_published_key(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/log/checkpoint")).status_code in (200, 404)
    await walk(http)
    note = await signed_at_least(http, 4)
    key = await http.get("/v1/log/public-key")
    assert key.headers["content-type"].startswith("text/plain")
    verifier = Verifier.parse(key.text)
    head = open_checkpoint(note, verifier)
    assert head.origin == "dealledger.local/log" and head.size >= 4
    # Independently of the app's note code: Ed25519 over the text before the blank line.
    text, _, signature_line = note.rpartition("\n\n")
    blob = base64.b64decode(signature_line.split(" ")[-1])
    Ed25519PublicKey.from_public_bytes(verifier.public).verify(blob[4:], (text + "\n").encode())
    history = (await http.get("/v1/log/checkpoints", headers=AUDITOR)).json()
    sizes = [c["tree_size"] for c in history["items"]]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == head.size
    assert history["items"][0]["verifier_key"] == key.text.strip()


async def test_every_event_is_proven_in_the_signed_tree(http: httpx.AsyncClient) -> None:
    _, deal = await walk(http)
    head = TreeHead.parse((await signed_at_least(http, 4)).rpartition("\n\n")[0] + "\n")
    items = (await http.get(f"/v1/deals/{deal['id']}/history")).json()["items"]
    assert all(item["hash_verified"] for item in items)
    for item in items:
        response = await http.get(
            "/v1/log/proof/inclusion",
            params={"position": item["position"], "tree_size": head.size},
        )
        assert response.status_code == 200, response.text
        proof = response.json()
        assert proof["leaf_index"] == item["leaf_index"]
        leaf = merkle.leaf_hash(bytes.fromhex(item["hash"]))
        path = [base64.b64decode(h) for h in proof["hashes"]]
        assert merkle.verify_inclusion(proof["leaf_index"], head.size, leaf, path, head.root)
        bent = [hashlib.sha256(path[0]).digest(), *path[1:]] if path else [bytes(32)]
        assert not merkle.verify_inclusion(proof["leaf_index"], head.size, leaf, bent, head.root)


async def test_consistency_between_two_checkpoints_verifies(http: httpx.AsyncClient) -> None:
    await walk(http)
    first = TreeHead.parse((await signed_at_least(http, 2)).rpartition("\n\n")[0] + "\n")
    await Deals(http).open(name="Later Inc")
    second = TreeHead.parse(
        (await signed_at_least(http, first.size + 1)).rpartition("\n\n")[0] + "\n"
    )
    response = await http.get(
        "/v1/log/proof/consistency", params={"from": first.size, "to": second.size}
    )
    assert response.status_code == 200, response.text
    proof = response.json()
    assert (proof["from"], proof["to"]) == (first.size, second.size)
    path = [base64.b64decode(h) for h in proof["hashes"]]
    assert merkle.verify_consistency(first.size, second.size, first.root, second.root, path)


async def test_proof_requests_out_of_range_are_clear_problems(http: httpx.AsyncClient) -> None:
    await walk(http)
    await signed_at_least(http, 4)
    cases = [
        ("/v1/log/proof/inclusion", {"position": 10_000}, 404),
        ("/v1/log/proof/inclusion", {"position": 1, "tree_size": 10_000}, 422),
        ("/v1/log/proof/consistency", {"from": 3, "to": 2}, 422),
        ("/v1/log/proof/consistency", {"from": 0, "to": 2}, 422),
        ("/v1/log/proof/consistency", {"from": 1, "to": 10_000}, 422),
    ]
    for path, params, status in cases:
        response = await http.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert response.headers["content-type"] == "application/problem+json"


async def test_deleting_a_deals_last_event_fails_its_verify(
    http: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    _, deal = await walk(http)
    await signed_at_least(http, 4)
    clean = (await http.get(f"/v1/deals/{deal['id']}/verify")).json()
    assert clean["valid"] and clean["events_in_checkpoint"] == 3, clean
    await pg.execute("ALTER TABLE events DISABLE TRIGGER USER")
    await pg.execute("DELETE FROM events WHERE stream_id = $1 AND version = 3", deal["id"])
    await pg.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_delete")
    verdict = (await http.get(f"/v1/deals/{deal['id']}/verify")).json()
    assert verdict["valid"] is False
    assert verdict["breaks"][0]["version"] == 3
    assert "no longer in the log" in verdict["breaks"][0]["reason"]


async def test_an_auditor_over_http_recomputes_the_tree(http: httpx.AsyncClient) -> None:
    await walk(http)
    head = TreeHead.parse((await signed_at_least(http, 4)).rpartition("\n\n")[0] + "\n")
    http.headers.update(AUDITOR)
    report = await audit_http(http, [head], lambda _: None)
    assert report.valid, report.findings
    assert report.checkpoints == [{"tree_size": head.size, "origin": head.origin, "status": "ok"}]
    forged = TreeHead(head.origin, head.size, hashlib.sha256(head.root).digest())
    assert not (await audit_http(http, [forged], lambda _: None)).valid


async def test_a_tree_changed_behind_the_service_stops_signing_and_readyz_says_why(
    http: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    await walk(http)
    note = await signed_at_least(http, 4)
    await pg.execute("UPDATE log_nodes SET hash = sha256(hash) WHERE index = 0")
    await Deals(http).open(name="After The Edit")
    for _ in range(500):
        ready = (await http.get("/readyz")).json()
        if ready["projections_stopped"]:
            break
        await asyncio.sleep(0.02)
    assert ready["status"] == "degraded"
    (stopped,) = ready["projections_stopped"]
    assert stopped["projection"] == "log_tree"
    assert "no longer has the root signed" in stopped["error"]
    assert (await http.get("/v1/log/checkpoint")).text == note  # nothing signed since


async def test_pipeline_versions_are_leaves_of_the_tree_too(http: httpx.AsyncClient) -> None:
    """The tree covers the whole log, not only deals: a pipeline's rules are history too."""
    from tests.api.test_pipelines import FUNNEL, create

    await create(http, FUNNEL)
    await Deals(http).open(name="After The Pipeline")
    await signed_at_least(http, 2)
    http.headers.update(AUDITOR)
    entries = (await http.get("/v1/log/entries")).json()["items"]
    defined = [e for e in entries if e["type"] == "PipelineVersionDefined"]
    assert defined and defined[0]["leaf_index"] is not None
    assert [e["leaf_index"] for e in entries] == list(range(len(entries)))


async def test_numbers_beyond_bigint_are_problems_not_server_errors(
    http: httpx.AsyncClient,
) -> None:
    huge = str(2**70)
    forged = base64.urlsafe_b64encode(b'{"i": ' + huge.encode() + b"}").decode().rstrip("=")
    http.headers.update(AUDITOR)
    cases: list[tuple[str, dict[str, str | int]]] = [
        ("/v1/log/proof/inclusion", {"position": huge}),
        ("/v1/log/proof/consistency", {"from": 1, "to": huge}),
        ("/v1/log/checkpoints", {"min_size": huge}),
        ("/v1/log/leaves", {"cursor": forged}),
    ]
    for path, params in cases:
        response = await http.get(path, params=params)
        assert response.status_code == 422, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
