"""Every request gets an id (its X-Request-ID, or a new one) that every log line written while
serving it carries, is answered with it, and is timed by route template for /metrics. Every
response also says `X-Content-Type-Options: nosniff`: browsers must not guess a type for
what we send."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.telemetry import REQUEST_ID, REQUEST_SECONDS

log = logging.getLogger("dealledger.http")
MAX_REQUEST_ID = 200


def request_id_of(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            given = str(value.decode("latin-1"))
            if 0 < len(given) <= MAX_REQUEST_ID:
                return given
    return str(uuid.uuid4())


class Observed:
    """Outermost middleware: the request id in context, the response headers, the timing and
    one log line per request (one layer for all of them: each layer wraps every message)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def answered(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Request-ID", request_id)
                headers.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        try:
            await self.app(scope, receive, answered)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUEST_SECONDS.labels(route, scope["method"], str(status)).observe(seconds)
            log.info(
                "%s %s %d",
                scope["method"],
                route,
                status,
                extra={"duration_ms": round(seconds * 1000, 2), "path": scope["path"]},
            )
            REQUEST_ID.reset(token)
