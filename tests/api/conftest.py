"""Helpers that read like the domain, driving the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.domain.pipeline import DEFAULT_PIPELINE
from tests.keys import KEYS

MANAGER = KEYS["manager"].headers
REP = KEYS["rep"].headers
WHEN = "2026-11-20T10:00:00+00:00"


def criteria_of(stage: str) -> list[str]:
    return [c.key for c in DEFAULT_PIPELINE.stage(stage).exit_criteria]


class Deals:
    """Drives the API like a client that reads its own writes (min_position)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.position = 0

    def saw(self, response: httpx.Response) -> httpx.Response:
        """Remember the log position a successful write reached."""
        if response.is_success and isinstance(position := response.json().get("position"), int):
            self.position = max(self.position, position)
        return response

    async def open(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Acme rollout", "owner": "rick.rep", **fields}
        response = self.saw(await self.client.post("/v1/deals", json=body, headers=REP))
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def evidence(self, deal_id: str, *criteria: str, kind: str = "meeting_notes") -> str:
        response = await self._post(
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
        return await self._post(
            f"/v1/deals/{deal_id}/{action}", json=body or {}, headers=headers, **kw
        )

    async def _post(self, url: str, **kw: Any) -> httpx.Response:
        return self.saw(await self.client.post(url, **kw))

    def fresh(self, **params: Any) -> dict[str, Any]:
        """Query parameters that make a read wait for this client's last write."""
        return {**params, **({"min_position": self.position} if self.position else {})}

    async def read(self, url: str, **params: Any) -> dict[str, Any]:
        # History, provenance and verify read the log itself: nothing to wait for there.
        from_log = url.endswith(("/history", "/provenance", "/verify"))
        response = await self.client.get(url, params=params if from_log else self.fresh(**params))
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def get(self, deal_id: str) -> dict[str, Any]:
        return await self.read(f"/v1/deals/{deal_id}")

    async def list(self, **params: Any) -> dict[str, Any]:
        return await self.read("/v1/deals", **params)

    async def make_ready_for(self, deal_id: str, stage: str) -> None:
        """Evidence for every criterion of `stage`, plus the fields later stages require."""
        await self.evidence(deal_id, *criteria_of(stage))


@pytest.fixture
def deals(client: httpx.AsyncClient) -> Deals:
    return Deals(client)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
