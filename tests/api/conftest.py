"""Helpers that read like the domain, driving the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.domain.pipeline import DEFAULT_PIPELINE

MANAGER = {"X-Actor": "maria.manager", "X-Actor-Role": "manager"}
REP = {"X-Actor": "rick.rep", "X-Actor-Role": "rep"}
WHEN = "2026-11-20T10:00:00+00:00"


def criteria_of(stage: str) -> list[str]:
    return [c.key for c in DEFAULT_PIPELINE.stage(stage).exit_criteria]


class Deals:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def open(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Acme rollout", "owner": "rick.rep", **fields}
        response = await self.client.post("/v1/deals", json=body, headers=REP)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def evidence(self, deal_id: str, *criteria: str, kind: str = "meeting_notes") -> str:
        response = await self.client.post(
            f"/v1/deals/{deal_id}/evidence",
            json={
                "kind": kind,
                "criteria": list(criteria),
                "summary": f"buyer confirmed {', '.join(criteria)}",
                "occurred_at": WHEN,
                "source": {"system": "gmail", "ref": "msg-1"},
            },
            headers=REP,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["evidence_id"])

    async def command(
        self, deal_id: str, action: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        headers = kw.pop("headers", REP)
        return await self.client.post(
            f"/v1/deals/{deal_id}/{action}", json=body or {}, headers=headers, **kw
        )

    async def get(self, deal_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/deals/{deal_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def make_ready_for(self, deal_id: str, stage: str) -> None:
        """Evidence for every criterion of `stage`, plus the fields later stages require."""
        await self.evidence(deal_id, *criteria_of(stage))


@pytest.fixture
def deals(client: httpx.AsyncClient) -> Deals:
    return Deals(client)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
