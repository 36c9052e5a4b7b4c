"""Headers every response carries: browsers must not guess a type for what we send."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def with_safe_headers(send: Send) -> Send:
    """`send`, adding `X-Content-Type-Options: nosniff` to the response it starts."""

    async def safe(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).setdefault("X-Content-Type-Options", "nosniff")
        await send(message)

    return safe


class SafeHeaders:
    """Outermost middleware: every response, problems included, gets the safe headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, with_safe_headers(send) if scope["type"] == "http" else send)
