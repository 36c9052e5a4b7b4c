"""Webhooks across real service processes: one killed outright between sending and recording
the answer (its delivery is sent again, with the same webhook-id, once restarted), and two
delivering side by side (nothing is sent twice)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_cli import free_port
from tests.keys import KEYS
from tests.receiver import Receiver, receiving
from tests.support import environment

ADMIN = KEYS["admin"].headers
REP = KEYS["rep"].headers


@pytest.fixture
def service_env(database_url: str, owner_url: str) -> dict[str, str]:
    return environment(
        DATABASE_URL=database_url,
        DEALLEDGER_OWNER_DATABASE_URL=owner_url,
        DEALLEDGER_WEBHOOKS_ALLOW_HTTP="1",
        DEALLEDGER_WEBHOOKS_ALLOWED_HOSTS="127.0.0.1",
        DEALLEDGER_WEBHOOKS_RETRY_SCHEDULE="0,0.1,0.1,0.1",
        DEALLEDGER_WEBHOOKS_TIMEOUT_SECONDS="1",
        DEALLEDGER_WEBHOOKS_LEASE_SECONDS="2",
    )


@contextlib.asynccontextmanager
async def service(
    env: dict[str, str], log_path: Path | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`dealledger serve` as a process of its own, once it answers /readyz; its stderr (the
    log) goes to `log_path`, or a temporary file."""
    port = free_port()
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log:  # noqa: ASYNC230
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "serve", "--port", str(port),
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient() as http:
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"{base}/readyz", timeout=1)).status_code == 200:
                            break
                    if process.returncode is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise AssertionError(f"serve did not start: {log.read().decode()}")
                    await asyncio.sleep(0.2)
            yield process, base
        finally:
            if process.returncode is None:
                process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 30)


async def subscribe(base: str, url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
        body = {"url": url, "event_types": ["deal.stage_entered"]}
        response = await http.post("/v1/webhooks", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())


async def open_deals(base: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=base, headers=REP, timeout=30) as http:
        for n in range(count):
            response = await http.post("/v1/deals", json={"name": f"Deal {n}", "owner": "ann"})
            assert response.status_code == 201, response.text


async def deliveries(base: str, webhook_id: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
        response = await http.get(f"/v1/webhooks/{webhook_id}/deliveries")
        return list(response.json()["items"])


async def test_a_delivery_cut_off_by_sigkill_is_sent_again_with_the_same_id(
    service_env: dict[str, str],
) -> None:
    held = asyncio.Event()
    async with receiving(Receiver(hold=held)) as receiver:
        async with service(service_env) as (process, base):
            hook = await subscribe(base, receiver.url)
            await open_deals(base, 1)
            await receiver.wait_for(1)  # sent, and the receiver has not answered yet
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), 10)
        (cut_off,) = receiver.requests
        held.set()  # answers 200 from now on
        async with service(service_env) as (_, base):
            await receiver.wait_for(2, within=30)
            async with asyncio.timeout(20):
                while True:
                    items = await deliveries(base, hook["id"])
                    if items[0]["status"] == "delivered":
                        break
                    await asyncio.sleep(0.1)
        again = receiver.requests[1]
        assert again.message_id == cut_off.message_id
        first, second = receiver.verified(hook["secret"])
        assert first == second and first["type"] == "deal.stage_entered"
        (delivery,) = items
        assert delivery["attempts"] == 2 and delivery["message_id"] == cut_off.message_id
        assert len(receiver.requests) == 2


async def test_two_processes_deliver_side_by_side_without_sending_anything_twice(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    # A receiver that takes its time, and two deliveries in flight per process: neither
    # process can take everything, so both deliver.
    env = {**service_env, "DEALLEDGER_WEBHOOKS_CONCURRENCY": "2"}
    async with (
        receiving(Receiver(delay=0.05)) as receiver,
        service(env, tmp_path / "one.log") as (_, one),
        service(env, tmp_path / "two.log") as (_, two),
    ):
        hook = await subscribe(one, receiver.url)
        await asyncio.gather(open_deals(one, 20), open_deals(two, 20))
        await receiver.wait_for(40, within=60)
        await asyncio.sleep(0.5)
        ids = [r.message_id for r in receiver.requests]
        assert len(ids) == len(set(ids)) == 40
        bodies = receiver.verified(hook["secret"])
        assert len({b["data"]["deal"]["id"] for b in bodies}) == 40
    logs = {name: log_lines(tmp_path / f"{name}.log") for name in ("one", "two")}
    for lines in logs.values():
        sent = [line for line in lines if line["logger"] == "dealledger.webhooks"]
        assert sent and all(line["message"].endswith(": delivered") for line in sent)
    # serve logs JSON lines; each one written for a request names that request.
    requests = [line for line in logs["one"] if line["logger"] == "dealledger.http"]
    assert requests and all(line["request_id"] for line in requests)
    assert any(line["message"] == "POST /v1/webhooks 201" for line in requests)


def log_lines(path: Path) -> list[dict[str, Any]]:
    """serve's log: JSON lines after its banner."""
    text = path.read_text().splitlines()
    lines = [json.loads(line) for line in text if line.startswith("{")]
    assert len(lines) > len(text) - 5
    return lines
