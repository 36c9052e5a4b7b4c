"""Pipelines as data, through HTTP against the real database: created and versioned by an
admin, deals opened on them walk by their own criteria, versions pin deals, migration is one
audited event per deal, flags use the thresholds of each deal's version."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml

from tests.api.conftest import MANAGER, REP, Deals, criteria_of
from tests.keys import KEYS
from tests.support import caught_up, settle

ADMIN = KEYS["admin"].headers
EXAMPLES = Path(__file__).parents[2] / "examples" / "pipelines"


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text()))


FUNNEL = example("funnel.yaml")
SIZED = {"amount": "30000", "currency": "EUR", "close_date": "2027-03-31"}
INBOUND = example("inbound.yaml")


def criteria(document: dict[str, Any], stage: str) -> list[str]:
    (found,) = [s for s in document["stages"] if s["key"] == stage]
    return [c["key"] for c in found["exit_criteria"]]


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return dict(response.json())


async def create(client: httpx.AsyncClient, document: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/pipelines", json=document, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/pipelines/{document['key']}"
    return dict(response.json())


async def walk_to_won(deals: Deals, deal_id: str, document: dict[str, Any]) -> dict[str, Any]:
    """Advance through every stage of `document`, each first refused naming exactly the
    stage's criteria, then met with evidence; then win."""
    stages = [s["key"] for s in document["stages"]]
    for current, target in itertools.pairwise([*stages, "won"]):
        action, body = ("win", {}) if target == "won" else ("advance", {"to_stage": target})
        early = problem_of(await deals.command(deal_id, action, body), 422)
        assert early["unmet_criteria"] == criteria(document, current), early
        await deals.evidence(deal_id, *criteria(document, current))
        moved = await deals.command(deal_id, action, body)
        assert moved.status_code == 200, moved.text
    return dict(moved.json())


async def test_a_four_stage_pipeline_walks_to_won_by_its_own_criteria(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    created = await create(client, FUNNEL)
    assert created["changed"] and created["pipeline"]["version"] == 1
    deal = await deals.open(
        pipeline="funnel", amount="30000", currency="EUR", close_date="2027-03-31"
    )
    assert (deal["pipeline"], deal["pipeline_version"], deal["stage"]) == ("funnel", 1, "lead")
    assert [c["key"] for c in deal["exit_criteria"]] == criteria(FUNNEL, "lead")
    assert deal["next_step"]["description"] == "First call to confirm the need"
    # The default pipeline's criteria mean nothing here.
    foreign = await deals.command(
        deal["id"],
        "evidence",
        {
            "kind": "email",
            "criteria": ["budget_range_confirmed"],
            "summary": "x",
            "occurred_at": "2026-11-20T10:00:00Z",
        },
    )
    assert "need_confirmed" in problem_of(foreign, 422)["allowed"]
    won = await walk_to_won(deals, deal["id"], FUNNEL)
    assert won["status"] == "won"
    provenance = await deals.read(f"/v1/deals/{deal['id']}/provenance", stage="won")
    (entry,) = provenance["entries"]
    assert entry["pipeline_version"] == 1
    assert list(entry["criteria"]) == criteria(FUNNEL, "negotiation")


async def test_the_short_cycle_inbound_pipeline_walks_to_won(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    await create(client, INBOUND)
    deal = await deals.open(pipeline="inbound")
    advance = problem_of(await deals.command(deal["id"], "advance", {"to_stage": "checkout"}), 422)
    assert advance["unmet_criteria"] == ["trial_activated"]
    assert advance["missing_required_fields"] == ["amount"]
    patched = await client.patch(
        f"/v1/deals/{deal['id']}", json={"amount": "49", "currency": "USD"}
    )
    assert patched.status_code == 200, patched.text
    assert (await walk_to_won(deals, deal["id"], INBOUND))["status"] == "won"
    # Regression triggers left out of the document are the standard ones.
    standard = (await client.get("/v1/pipelines/inbound")).json()["regression_triggers"]
    assert "stakeholder_changed" in [t["key"] for t in standard]


def default_with_champion() -> dict[str, Any]:
    document = copy.deepcopy(example("default.yaml"))
    document["stages"][0]["exit_criteria"].append(
        {"key": "champion_found", "label": "Champion found"}
    )
    return document


async def test_version_2_applies_to_new_deals_and_migrated_ones_and_history_names_it(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    before = await deals.open(**SIZED)
    to_move = await deals.open(**SIZED)
    assert before["pipeline_version"] == 1
    put = await client.put("/v1/pipelines/default", json=default_with_champion(), headers=ADMIN)
    assert put.status_code == 200, put.text
    assert put.json()["changed"] and put.json()["pipeline"]["version"] == 2
    assert put.headers["etag"] == '"2"'
    # The same document again publishes nothing.
    again = await client.put("/v1/pipelines/default", json=default_with_champion(), headers=ADMIN)
    assert again.json()["changed"] is False and again.json()["pipeline"]["version"] == 2

    after = await deals.open(**SIZED)
    assert after["pipeline_version"] == 2
    assert "champion_found" in [c["key"] for c in after["exit_criteria"]]

    # Opened before: version 1's rules still hold.
    await deals.evidence(before["id"], *criteria_of("discovery"))
    moved = await deals.command(before["id"], "advance", {"to_stage": "qualification"})
    assert moved.status_code == 200, moved.text
    # Opened after: the new criterion is needed.
    await deals.evidence(after["id"], *criteria_of("discovery"))
    refused = await deals.command(after["id"], "advance", {"to_stage": "qualification"})
    assert problem_of(refused, 422)["unmet_criteria"] == ["champion_found"]

    # Migrated: an explicit command (managers), one event, then the new rules.
    by_rep = await deals.command(to_move["id"], "migrate", {"reason": "v2"}, headers=REP)
    assert problem_of(by_rep, 403)["status"] == 403
    migrated = await deals.command(
        to_move["id"], "migrate", {"reason": "roll out champion criterion"}, headers=MANAGER
    )
    assert migrated.status_code == 200, migrated.text
    assert migrated.json()["pipeline_version"] == 2
    await deals.evidence(to_move["id"], *criteria_of("discovery"))
    refused = await deals.command(to_move["id"], "advance", {"to_stage": "qualification"})
    assert problem_of(refused, 422)["unmet_criteria"] == ["champion_found"]
    await deals.evidence(to_move["id"], "champion_found")
    moved_on = await deals.command(to_move["id"], "advance", {"to_stage": "qualification"})
    assert moved_on.status_code == 200, moved_on.text

    history = await deals.read(f"/v1/deals/{to_move['id']}/history")
    types = [item["type"] for item in history["items"]]
    assert types.count("DealMigrated") == 1
    (event,) = [item for item in history["items"] if item["type"] == "DealMigrated"]
    assert event["data"]["from_version"] == 1 and event["data"]["to_version"] == 2
    assert event["metadata"]["actor"]["role"] == "manager"
    for deal_id, version in ((before["id"], 1), (to_move["id"], 2)):
        provenance = await deals.read(f"/v1/deals/{deal_id}/provenance", stage="qualification")
        assert [e["pipeline_version"] for e in provenance["entries"]] == [version]

    first = await client.get("/v1/pipelines/default/versions/1")
    assert first.status_code == 200 and len(first.json()["stages"][0]["exit_criteria"]) == 4
    diff = (await client.get("/v1/pipelines/default/diff", params={"from": 1, "to": 2})).json()
    assert [c["path"] for c in diff["changes"]] == ["stages.discovery.exit_criteria.champion_found"]
    listed = (await client.get("/v1/pipelines")).json()
    assert {
        "key": "default",
        "label": "Buyer-aligned (default)",
        "latest_version": 2,
        "stages": ["discovery", "qualification", "proposal", "negotiation", "closing"],
    } in listed


async def test_an_admin_migrates_every_open_deal_of_a_pipeline_with_a_stage_mapping(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    await create(client, FUNNEL)
    lead = await deals.open(pipeline="funnel", amount="1", close_date="2027-01-01")
    proposal = await deals.open(pipeline="funnel", amount="1", close_date="2027-01-01")
    for stage in ("lead", "qualified"):
        await deals.evidence(proposal["id"], *criteria(FUNNEL, stage))
    advanced = await deals.command(proposal["id"], "advance", {"to_stage": "proposal"})
    assert advanced.status_code == 200, advanced.text
    lost = await deals.open(pipeline="funnel")
    await deals.command(lost["id"], "disqualify", {"reason": "no_budget"})
    # Version 2 merges proposal into negotiation.
    v2 = copy.deepcopy(FUNNEL)
    v2["stages"] = [s for s in v2["stages"] if s["key"] != "proposal"]
    v2["late_stages"] = ["negotiation"]
    v2["regression_triggers"][0]["reopens"] = ["need_confirmed"]
    put = await client.put("/v1/pipelines/funnel", json={**v2, "version": 2}, headers=ADMIN)
    assert put.status_code == 200, put.text
    unmapped = await client.post(
        "/v1/pipelines/funnel/migrate",
        json={"reason": "merge proposal"},
        params=deals.fresh(),
        headers=ADMIN,
    )
    report = unmapped.json()
    assert [m["deal_id"] for m in report["moved"]] == [lead["id"]]
    (failed,) = report["failed"]
    assert failed["deal_id"] == proposal["id"] and "stage_mapping" in failed["problem"]["detail"]
    mapped = await client.post(
        "/v1/pipelines/funnel/migrate",
        json={"reason": "merge proposal", "stage_mapping": {"proposal": "negotiation"}},
        params=deals.fresh(),
        headers=ADMIN,
    )
    (moved,) = mapped.json()["moved"]
    assert (moved["from_stage"], moved["to_stage"], moved["from_version"]) == (
        "proposal",
        "negotiation",
        1,
    )
    deals.position = max(deals.position, moved["position"])
    now = await deals.get(proposal["id"])
    assert (now["stage"], now["pipeline_version"]) == ("negotiation", 2)
    assert (await deals.get(lost["id"]))["pipeline_version"] == 1  # closed deals stay
    stays = await deals.read(f"/v1/deals/{proposal['id']}/stage-history")
    assert [s["left_how"] for s in stays["intervals"]][-2:] == ["migrated", None]
    # Analytics by pipeline and version: stays on version 2 only (the lead deal's stay moved
    # to version 2 in place).
    conversion = await client.get(
        "/v1/analytics/conversion",
        params=deals.fresh(pipeline="funnel", pipeline_version=2),
        headers=MANAGER,
    )
    assert conversion.status_code == 200, conversion.text
    assert [row["stage"] for row in conversion.json()] == ["lead", "negotiation"]
    everything = await client.get(
        "/v1/analytics/conversion", params=deals.fresh(pipeline="funnel"), headers=MANAGER
    )
    # The latest version's order, then stages it no longer has (qualified was skipped).
    assert [row["stage"] for row in everything.json()] == ["lead", "negotiation", "proposal"]


async def test_a_rep_cannot_change_pipelines_and_invalid_documents_are_named(
    client: httpx.AsyncClient, deals: Deals
) -> None:
    for method, url in (
        ("POST", "/v1/pipelines"),
        ("PUT", "/v1/pipelines/default"),
        ("POST", "/v1/pipelines/default/migrate"),
    ):
        refused = await client.request(method, url, json=FUNNEL, headers=REP)
        assert "admin" in problem_of(refused, 403)["detail"]

    async def invalid(document: dict[str, Any], status: int = 422) -> dict[str, Any]:
        return problem_of(await client.post("/v1/pipelines", json=document, headers=ADMIN), status)

    twice = {**FUNNEL, "stages": [*FUNNEL["stages"], FUNNEL["stages"][0]]}
    assert "stages: duplicate stage key 'lead'" in (await invalid(twice))["problems"]
    falling = copy.deepcopy(FUNNEL)
    falling["stages"][1]["probability"] = 0.05
    problem = await invalid(falling)
    assert problem["type"] == "/problems/invalid-pipeline"
    assert any("stages.qualified.probability" in p for p in problem["problems"])
    unknown = copy.deepcopy(FUNNEL)
    unknown["regression_triggers"][0]["reopens"] = ["budget_range_confirmed"]
    assert "unknown criterion 'budget_range_confirmed'" in (await invalid(unknown))["detail"]
    empty = await invalid({"key": "empty", "label": "Empty", "stages": []})
    assert empty["problems"] == ["stages: a pipeline needs at least one stage"]
    unlabelled = {k: v for k, v in FUNNEL.items() if k != "label"}
    assert "label" in str(await invalid(unlabelled))
    assert "key" in str(await invalid({**FUNNEL, "key": "Has Spaces"}))
    assert (await invalid({**example("default.yaml")}, 409))["latest_version"] == 1
    mismatch = await client.put("/v1/pipelines/default", json=FUNNEL, headers=ADMIN)
    assert problem_of(mismatch, 422)["field"] == "key"
    problem_of(await client.put("/v1/pipelines/funnel", json=FUNNEL, headers=ADMIN), 404)
    stale = await client.put(
        "/v1/pipelines/default", json={**example("default.yaml"), "version": 5}, headers=ADMIN
    )
    assert problem_of(stale, 409)["latest_version"] == 1
    problem_of(await client.get("/v1/pipelines/nope"), 404)
    problem_of(await client.get("/v1/pipelines/default/versions/2"), 404)
    opened = await client.post("/v1/deals", json={"name": "x", "owner": "o", "pipeline": "nope"})
    assert problem_of(opened, 422)["allowed"] == ["default"]
    # Nothing was published by any of it.
    assert [p["key"] for p in (await client.get("/v1/pipelines")).json()] == ["default"]


async def test_flags_use_the_stage_thresholds_of_each_deals_version(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    await create(client, FUNNEL)  # lead: inactive after 5 days (the settings say 7)
    on_v1 = await deals.open(pipeline="funnel")
    stricter = copy.deepcopy(FUNNEL)
    stricter["stages"][0]["stall"] = {"inactive_days": 2, "slow_warning_ratio": 0.5}
    put = await client.put("/v1/pipelines/funnel", json=stricter, headers=ADMIN)
    assert put.status_code == 200, put.text
    on_v2 = await deals.open(pipeline="funnel")
    on_default = await deals.open()
    later = datetime.now(UTC) + timedelta(days=6)

    async def flags(deal: dict[str, Any]) -> dict[str, dict[str, Any]]:
        found = await deals.read(f"/v1/deals/{deal['id']}/flags", as_of=later.isoformat())
        return {flag["kind"]: flag for flag in found["flags"]}

    v1, v2, default = await flags(on_v1), await flags(on_v2), await flags(on_default)
    assert v1["inactive"]["numbers"]["threshold_days"] == 5
    assert v2["inactive"]["numbers"]["threshold_days"] == 2
    assert "inactive" not in default  # 7 days, from the settings, as before
    assert "slow_in_stage" not in v1  # 6 of 10 days
    assert v2["slow_in_stage"]["severity"] == "warning"  # 0.5 x 10 days
    # The flags read model (swept at that time, as the projector does) agrees.
    await caught_up(pg)
    await settle(pg, later)
    standing = await client.get(
        "/v1/flags", params={"kind": "inactive", "as_of": later.isoformat()}, headers=MANAGER
    )
    thresholds = {f["deal_id"]: f["numbers"]["threshold_days"] for f in standing.json()["items"]}
    assert thresholds == {on_v1["id"]: 5, on_v2["id"]: 2}
    rows = await pg.fetch(
        "SELECT deal_id::text, numbers->>'threshold_days' AS days FROM deal_flags"
        " WHERE kind = 'inactive' AND cleared_at IS NULL"
    )
    assert {r["deal_id"]: float(r["days"]) for r in rows} == {on_v1["id"]: 5, on_v2["id"]: 2}


async def test_a_fresh_install_works_on_the_built_in_default_without_any_pipeline_call(
    deals: Deals, client: httpx.AsyncClient, pg: asyncpg.Connection
) -> None:
    listed = (await client.get("/v1/pipelines")).json()
    assert [(p["key"], p["latest_version"]) for p in listed] == [("default", 1)]
    default = await client.get("/v1/pipelines/default")
    assert default.headers["etag"] == '"1"'
    shape = default.json()
    assert shape["version"] == 1 and len(shape["stages"]) == 5
    assert {
        "key",
        "label",
        "probability",
        "expected_days",
        "exit_criteria",
        "required_fields",
        "next_step_templates",
    } <= set(shape["stages"][0])
    deal = await deals.open()
    assert (deal["pipeline"], deal["pipeline_version"]) == ("default", 1)
    stored = "SELECT count(*) FROM events WHERE type = 'PipelineVersionDefined'"
    assert await pg.fetchval(stored) == 0  # nothing written for the default until revised
