"""Property-based fuzzing of every operation (schemathesis) against a live server.

Zero 5xx, and every response must match the committed OpenAPI document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import checks

from app.db import APP_ROLE, asyncpg_dsn, with_database, with_user
from app.main import create_app
from app.settings import Settings
from tests.conftest import APP_PASSWORD
from tests.keys import KEYS

SPEC = json.loads((Path(__file__).parents[2] / "openapi" / "openapi.json").read_text())
schema = schemathesis.openapi.from_dict(SPEC)


def _run(coroutine_factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine on a fresh loop in another thread (the test loop may be running)."""
    result: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coroutine_factory())
        except BaseException as exc:  # re-raised in the calling thread
            result.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if result:
        raise result[0]


@pytest.fixture(scope="module")
def live_url(server_url: str, template_name: str) -> Iterator[str]:
    name = f"dealledger_fuzz_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    _run(lambda: admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    url = with_user(with_database(server_url, name), APP_ROLE, APP_PASSWORD)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Generous: a read asking for a position waits for the projector, which a loaded CI machine
    # may keep behind for a moment (a 503 there is documented, but not what is fuzzed here).
    app = create_app(Settings(read_wait_seconds=2.0), database_url=url)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    # A deal to aim at, so operations on an existing deal get explored too.
    deal = httpx.post(
        f"{base}/v1/deals", json={"name": "Fuzz", "owner": "o"}, headers=KEYS["admin"].headers
    )
    assert deal.status_code == 201
    yield base
    server.should_exit = True
    thread.join(timeout=30)
    _run(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_operation_answers_5xx_or_off_schema(
    case: schemathesis.Case[Any], live_url: str
) -> None:
    # Not `positive_data_acceptance`: a schema cannot say which opaque cursors or which deal
    # ids exist, so schema-valid requests may rightly be 404 or 422.
    case.call_and_validate(
        base_url=live_url,
        headers=KEYS["admin"].headers,
        checks=[
            checks.not_a_server_error,
            checks.response_schema_conformance,
            checks.content_type_conformance,
            checks.status_code_conformance,
            checks.response_headers_conformance,
            checks.negative_data_rejection,
        ],
    )


def test_stateful_sequences_answer_no_5xx_or_off_schema(live_url: str) -> None:
    """Operations chained on real ids (deals opened, then advanced, read, verified...).
    Revoking keys is left out: the sequences act with the admin key, and must keep it."""
    machine = schema.exclude(path="/v1/keys/{key_id}/revoke").as_state_machine()
    failures: list[BaseException] = []
    steps: list[str] = []

    class Sequences(machine):  # type: ignore[valid-type,misc]
        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"base_url": live_url, "headers": KEYS["admin"].headers}

        def validate_response(
            self, response: Any, case: schemathesis.Case[Any], **kwargs: Any
        ) -> None:
            steps.append(f"{case.method} {case.path} -> {response.status_code}")
            try:
                case.validate_response(
                    response,
                    checks=[
                        checks.not_a_server_error,
                        checks.response_schema_conformance,
                        checks.content_type_conformance,
                        checks.status_code_conformance,
                    ],
                )
            except Exception as exc:
                failures.append(exc)
                raise

    # The server's state outlives each sequence (deals opened earlier are still there, a slow
    # projector answers later), so a replayed prefix may fill schemathesis' bundles differently
    # and Hypothesis stops exploring (FlakyStrategyDefinition). That says nothing of the API:
    # what the test is about is every response checked until then, below.
    with contextlib.suppress(FlakyStrategyDefinition):
        Sequences.run(
            settings=settings(
                max_examples=30,
                stateful_step_count=6,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
        )
    assert not failures, failures[0]
    assert len(steps) >= 20, f"only {len(steps)} calls were made: {steps}"
