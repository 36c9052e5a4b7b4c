"""Idempotency-Key on any POST: a retry replays the first successful response.

The service also derives event ids from the key, so even a retry that arrives after a crash
(before the response was remembered) appends nothing twice. Failures are not remembered: a
retried failure is decided again, which changes nothing either.
"""

from __future__ import annotations

import hashlib
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.problems import problem_response
from app.api.state import app_state
from app.db import driver_connection
from app.domain.errors import DatabaseUnavailable

_REPLAYED_HEADERS = (b"content-type", b"etag", b"location")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


log = logging.getLogger("dealledger.idempotency")


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # Keys are scoped per caller: AuthMiddleware (outside this one) has identified it.
        actor = scope["state"]["actor"].id if "actor" in scope.get("state", {}) else "anonymous"
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        fingerprint = hashlib.sha256(
            b"\n".join([scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        engine = app_state(scope.get("state", {})).engine
        async with driver_connection(engine) as connection:
            stored = await connection.fetchrow(
                "SELECT fingerprint, status, headers::text AS headers, body FROM idempotency_keys"
                " WHERE actor = $1 AND key = $2",
                actor,
                key,
            )
        if stored is not None:
            if stored["fingerprint"] != fingerprint:
                response = problem_response(
                    422,
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used for a different request; use a new key",
                    type_="/problems/idempotency-key-reused",
                )
                await response(scope, receive, send)
                return
            headers = [(k.encode(), v.encode()) for k, v in json.loads(stored["headers"])]
            await send(
                {
                    "type": "http.response.start",
                    "status": stored["status"],
                    "headers": [*headers, (b"idempotent-replayed", b"true")],
                }
            )
            await send({"type": "http.response.body", "body": stored["body"]})
            return

        delivered = False

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        start: Message = {}
        response_chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                response_chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, replay_body, capture)
        status = int(start.get("status", 500))
        if 200 <= status < 300:
            headers = [
                (k.decode(), v.decode())
                for k, v in start.get("headers", [])
                if k.lower() in _REPLAYED_HEADERS
            ]
            try:
                async with driver_connection(engine) as connection:
                    await connection.execute(
                        "INSERT INTO idempotency_keys"
                        " (actor, key, fingerprint, status, headers, body)"
                        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        actor,
                        key,
                        fingerprint,
                        status,
                        json.dumps(headers),
                        b"".join(response_chunks),
                    )
            except DatabaseUnavailable:
                # The answer is sent and the command committed; a retry is still safe, as
                # its event ids derive from the key: it is answered from the log instead.
                log.warning("could not remember the response to Idempotency-Key %r", key)
