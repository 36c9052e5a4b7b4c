"""Bearer keys: an ASGI middleware authenticates every /v1 request; routes declare roles.

Authentication runs before anything reads the body (and before Idempotency-Key replay, so a
revoked key cannot replay either); each route then checks the role with `require(...)`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import problem_response
from app.api.state import app_state
from app.db import driver_connection
from app.domain.decide import Actor
from app.keys import find_key

log = logging.getLogger("dealledger.auth")

# What each permission lets a role do. The README's matrix is this table.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset({"rep", "manager", "auditor", "admin"}),
    "team": frozenset({"manager", "auditor", "admin"}),
    "deal:write": frozenset({"rep", "manager", "admin"}),
    "buyer:write": frozenset({"ingest", "rep", "manager", "admin"}),
    "events:ingest": frozenset({"ingest", "admin"}),
    "keys": frozenset({"admin"}),
}
DEV_ACTOR = Actor(id="dev", role="admin", name="anonymous (dev mode)")
MAX_TOKEN_LENGTH = 512
_REALM = 'Bearer realm="dealledger"'


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, dev_mode: bool = False) -> None:
        self.app = app
        self.dev_mode = dev_mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        actor: Actor | None = None
        detail, challenge = "send Authorization: Bearer <api key>", _REALM
        if header is None:
            if self.dev_mode:
                actor = DEV_ACTOR
        else:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
                detail = "the Authorization header must be: Bearer <api key>"
                challenge = f'{_REALM}, error="invalid_request"'
            else:
                async with driver_connection(
                    app_state(scope.get("state", {})).engine
                ) as connection:
                    key = await find_key(connection, token)
                if key is not None:
                    actor = Actor(id=str(key.key_id), role=key.role, name=key.name)
                else:
                    detail = "unknown or revoked API key"
                    challenge = f'{_REALM}, error="invalid_token"'
        if actor is None:
            response = problem_response(
                401,
                "Unauthorized",
                detail,
                type_="/problems/unauthorized",
                headers={"WWW-Authenticate": challenge},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["actor"] = actor
        await self.app(scope, receive, send)


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key: `dealledger keys create --role ROLE --name NAME` prints one.",
)


def require(permission: str) -> Callable[..., Awaitable[Actor]]:
    """A route dependency: the caller's role must hold `permission` (else 403)."""
    roles = PERMISSIONS[permission]

    async def check(
        request: Request,
        _documented: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Actor:
        actor: Actor = request.state.actor
        if actor.role not in roles:
            allowed = ", ".join(sorted(roles))
            raise HTTPException(
                403, f"a {actor.role} key may not do this; it needs one of: {allowed}"
            )
        return actor

    return check
