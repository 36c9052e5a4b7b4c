"""A deal's walk through the pipeline, through HTTP against the real database."""

from __future__ import annotations

import asyncio
import itertools

import httpx

from tests.api.conftest import MANAGER, REP, Deals, criteria_of
from tests.keys import KEYS


async def test_open_deal_starts_in_discovery_with_a_proposed_next_step(deals: Deals) -> None:
    deal = await deals.open(amount="12000.00", currency="EUR")
    assert deal["stage"] == "discovery" and deal["status"] == "open"
    assert deal["version"] == 2  # DealOpened + the stage's proposed next step
    assert deal["next_step"]["origin"] == "stage_template"
    assert [c["key"] for c in deal["exit_criteria"]] == criteria_of("discovery")
    assert not any(c["met"] for c in deal["exit_criteria"])
    fetched = await deals.get(deal["id"])
    assert fetched["amount"] == "12000.00"


async def test_get_has_etag_of_the_version(deals: Deals, client: httpx.AsyncClient) -> None:
    deal = await deals.open()
    response = await client.get(f"/v1/deals/{deal['id']}")
    assert response.headers["etag"] == f'"{deal["version"]}"'


async def test_walk_from_discovery_to_won_only_with_evidence(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open(amount="50000", currency="USD", close_date="2027-02-01")
    deal_id = deal["id"]
    sponsor = await client.post(
        f"/v1/deals/{deal_id}/stakeholders",
        json={"name": "Erin Buyer", "role": "economic_buyer", "title": "CFO"},
        headers=REP,
    )
    assert sponsor.status_code == 201
    stages = ["discovery", "qualification", "proposal", "negotiation", "closing"]
    for current, target in itertools.pairwise(stages):
        early = await deals.command(deal_id, "advance", {"to_stage": target})
        assert early.status_code == 422
        problem = early.json()
        assert early.headers["content-type"] == "application/problem+json"
        assert problem["unmet_criteria"] == criteria_of(current), problem
        assert problem["missing_required_fields"] == []

        first, *rest = criteria_of(current)
        await deals.evidence(deal_id, first)
        partial = await deals.command(deal_id, "advance", {"to_stage": target})
        assert partial.status_code == 422
        assert partial.json()["unmet_criteria"] == rest

        if rest:
            await deals.evidence(deal_id, *rest)
        advanced = await deals.command(deal_id, "advance", {"to_stage": target})
        assert advanced.status_code == 200, advanced.text
        assert advanced.json()["stage"] == target

    early_win = await deals.command(deal_id, "win")
    assert early_win.status_code == 422
    assert early_win.json()["unmet_criteria"] == ["contract_signed"]
    await deals.evidence(deal_id, "contract_signed", kind="signed_contract")
    won = await deals.command(deal_id, "win")
    assert won.status_code == 200
    assert won.json()["status"] == "won"

    again = await deals.command(
        deal_id, "regress", {"to_stage": "discovery", "trigger": "timeline_extended"}
    )
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/deal-closed"


async def test_required_fields_block_the_advance_with_a_list(deals: Deals) -> None:
    deal = await deals.open()
    await deals.make_ready_for(deal["id"], "discovery")
    response = await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
    assert response.status_code == 422
    assert response.json()["unmet_criteria"] == []
    assert response.json()["missing_required_fields"] == ["amount", "close_date"]


async def test_skipping_a_stage_needs_the_skipped_stage_criteria(deals: Deals) -> None:
    deal = await deals.open(amount="1000", close_date="2027-01-01")
    await deals.make_ready_for(deal["id"], "discovery")
    response = await deals.command(deal["id"], "advance", {"to_stage": "proposal"})
    assert response.status_code == 422
    assert response.json()["unmet_criteria"] == criteria_of("qualification")
    assert "economic_buyer" in response.json()["missing_required_fields"]


async def test_retracting_the_only_evidence_makes_the_criterion_unmet(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    evidence_id = await deals.evidence(deal["id"], "budget_confirmed")
    before = await deals.get(deal["id"])
    budget = next(c for c in before["exit_criteria"] if c["key"] == "budget_confirmed")
    assert budget["met"] and budget["evidence_ids"] == [evidence_id]

    retracted = await deals.command(
        deal["id"], f"evidence/{evidence_id}/retract", {"reason": "budget did not exist"}
    )
    assert retracted.status_code == 200
    budget = next(c for c in retracted.json()["exit_criteria"] if c["key"] == "budget_confirmed")
    assert not budget["met"] and budget["evidence_ids"] == []


async def test_manager_override_is_recorded_and_a_rep_cannot_override(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open(amount="1000", close_date="2027-01-01")
    body = {"to_stage": "qualification", "override": {"reason": "CEO referral, known budget"}}
    refused = await deals.command(deal["id"], "advance", body, headers=REP)
    assert refused.status_code == 403
    allowed = await deals.command(deal["id"], "advance", body, headers=MANAGER)
    assert allowed.status_code == 200
    history = (await client.get(f"/v1/deals/{deal['id']}/history")).json()["items"]
    advanced = next(e for e in history if e["type"] == "StageAdvanced")
    manager = KEYS["manager"]
    assert advanced["data"]["override"] == {
        "reason": "CEO referral, known budget",
        "by": str(manager.key_id),
        "by_name": "maria.manager",
        "by_role": "manager",
    }
    assert advanced["metadata"]["actor"] == {
        "id": str(manager.key_id),
        "name": "maria.manager",
        "role": "manager",
    }


async def test_regression_needs_a_known_trigger_and_an_earlier_stage(deals: Deals) -> None:
    deal = await deals.open(amount="1000", close_date="2027-01-01")
    await deals.make_ready_for(deal["id"], "discovery")
    assert (
        await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
    ).status_code == 200

    unknown = await deals.command(
        deal["id"], "regress", {"to_stage": "discovery", "trigger": "bored"}
    )
    assert unknown.status_code == 422
    assert "timeline_extended" in unknown.json()["allowed"]
    forward = await deals.command(
        deal["id"], "regress", {"to_stage": "proposal", "trigger": "timeline_extended"}
    )
    assert forward.status_code == 409
    back = await deals.command(
        deal["id"],
        "regress",
        {"to_stage": "discovery", "trigger": "stakeholder_changed", "note": "CFO left"},
    )
    assert back.status_code == 200
    assert back.json()["stage"] == "discovery"
    # The trigger reopened the criteria it concerns: the old evidence no longer meets them.
    again = await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
    assert again.status_code == 422
    assert again.json()["unmet_criteria"] == ["decision_maker_identified"]
    await deals.evidence(deal["id"], "decision_maker_identified")
    assert (
        await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
    ).status_code == 200


async def test_the_pipeline_shows_which_criteria_each_regression_trigger_reopens(
    deals: Deals,
) -> None:
    pipeline = await deals.read("/v1/pipelines/default")
    triggers = {t["key"]: t for t in pipeline["regression_triggers"]}
    assert triggers["stakeholder_changed"]["reopens"] == [
        "decision_maker_identified",
        "economic_buyer_engaged",
        "stakeholders_aligned",
    ]
    assert triggers["buying_process_restarted"]["reopens_target_and_later"] is True


async def test_nurture_and_reactivation(deals: Deals) -> None:
    deal = await deals.open(amount="1000", close_date="2027-01-01")
    await deals.make_ready_for(deal["id"], "discovery")
    await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
    parked = await deals.command(
        deal["id"], "nurture", {"reason": "budget frozen until Q2", "resume_on": "2027-04-01"}
    )
    assert parked.status_code == 200
    assert parked.json()["status"] == "nurture" and parked.json()["stage"] == "nurture"
    blocked = await deals.command(deal["id"], "advance", {"to_stage": "proposal"})
    assert blocked.status_code == 409
    too_far = await deals.command(deal["id"], "reactivate", {"to_stage": "proposal"})
    assert too_far.status_code == 409
    back = await deals.command(deal["id"], "reactivate", {})
    assert back.status_code == 200
    assert back.json()["stage"] == "qualification" and back.json()["status"] == "open"


async def test_disqualified_deal_refuses_advance(deals: Deals) -> None:
    deal = await deals.open()
    unknown = await deals.command(deal["id"], "disqualify", {"reason": "meh"})
    assert unknown.status_code == 422
    assert "chose_competitor" in unknown.json()["allowed"]
    done = await deals.command(
        deal["id"], "disqualify", {"reason": "chose_competitor", "note": "went with X"}
    )
    assert done.status_code == 200 and done.json()["status"] == "disqualified"
    await deals.make_ready_for(deal["id"], "discovery")
    refused = await deals.command(deal["id"], "advance", {"to_stage": "qualification"})
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("deal is disqualified")


async def test_unknown_deal_is_404_problem(client: httpx.AsyncClient) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    response = await client.get(f"/v1/deals/{missing}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    advance = await client.post(f"/v1/deals/{missing}/advance", json={"to_stage": "qualification"})
    assert advance.status_code == 404


async def test_unknown_criterion_is_422_naming_it(deals: Deals, client: httpx.AsyncClient) -> None:
    deal = await deals.open()
    response = await client.post(
        f"/v1/deals/{deal['id']}/evidence",
        json={
            "kind": "email",
            "criteria": ["vibes_good"],
            "summary": "x",
            "occurred_at": "2026-11-01T00:00:00Z",
        },
    )
    assert response.status_code == 422
    assert "vibes_good" in response.json()["detail"]


async def test_twenty_concurrent_advances_produce_one_stage_advanced(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    await deals.make_ready_for(deal["id"], "discovery")
    await client.patch(
        f"/v1/deals/{deal['id']}", json={"amount": "900", "close_date": "2027-01-01"}
    )
    responses = await asyncio.gather(
        *(deals.command(deal["id"], "advance", {"to_stage": "qualification"}) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1
    assert all(code == 409 for code in statuses if code != 200)
    history = (await client.get(f"/v1/deals/{deal['id']}/history", params={"limit": 500})).json()
    assert [e["type"] for e in history["items"]].count("StageAdvanced") == 1


async def test_if_match_mismatch_is_412(deals: Deals, client: httpx.AsyncClient) -> None:
    deal = await deals.open()
    stale = await client.patch(
        f"/v1/deals/{deal['id']}", json={"owner": "olga"}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 412
    fresh = await client.patch(
        f"/v1/deals/{deal['id']}",
        json={"owner": "olga"},
        headers={"If-Match": f'"{deal["version"]}"'},
    )
    assert fresh.status_code == 200 and fresh.json()["owner"] == "olga"
    assert fresh.headers["etag"] == f'"{deal["version"] + 1}"'


async def test_text_postgres_cannot_store_is_422_not_500(
    deals: Deals, client: httpx.AsyncClient
) -> None:
    deal = await deals.open()
    response = await client.post(
        f"/v1/deals/{deal['id']}/activities",
        json={
            "type": "email_replied",
            "occurred_at": "2026-11-01T00:00:00Z",
            "details": {"x": "a\u0000b"},
        },
    )
    assert response.status_code == 422
    assert "NUL" in response.json()["detail"]
