"""Bearer keys: an ASGI middleware authenticates every /v1 request; routes declare roles.

Authentication runs before anything reads the body (and before Idempotency-Key replay, so a
revoked key cannot replay either); each route then checks the role with `require(...)`.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.problems import problem_response
from app.api.state import app_state
from app.db import driver_connection
from app.domain.decide import Actor
from app.domain.errors import Forbidden
from app.keys import TOKEN_PREFIX, find_key, token_hash

log = logging.getLogger("dealledger.auth")

# What each permission lets a role do. The README's matrix is this table.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset({"rep", "manager", "auditor", "admin"}),
    "team": frozenset({"manager", "auditor", "admin"}),
    "deal:write": frozenset({"rep", "manager", "admin"}),
    "buyer:write": frozenset({"ingest", "rep", "manager", "admin"}),
    "events:ingest": frozenset({"ingest", "admin"}),
    "keys": frozenset({"admin"}),
    "pipelines:write": frozenset({"admin"}),
    "deal:migrate": frozenset({"manager", "admin"}),
    "targets:write": frozenset({"manager", "admin"}),
    "webhooks": frozenset({"admin"}),
}
DEV_ACTOR = Actor(id="dev", role="admin", name="anonymous (dev mode)")
# Real tokens are the prefix and 43 URL-safe characters; up to 100 keeps hand-made ones working.
TOKEN_FORMAT = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9_-]{{1,100}}")
_REALM = 'Bearer realm="dealledger"'


class UnknownTokens:
    """Tokens recently found unknown or revoked (by hash), so a flood of them costs one
    query each per `ttl` seconds; bounded, oldest dropped first. Known keys have a cache of
    their own (app.keys.KeyCache)."""

    def __init__(self, size: int = 4096, ttl: float = 10.0) -> None:
        self.size, self.ttl = size, ttl
        self._until: OrderedDict[bytes, float] = OrderedDict()

    def __contains__(self, token: str) -> bool:
        until = self._until.get(token_hash(token))
        return until is not None and until > time.monotonic()

    def add(self, token: str) -> None:
        digest = token_hash(token)
        self._until.pop(digest, None)
        self._until[digest] = time.monotonic() + self.ttl
        while len(self._until) > self.size:
            self._until.popitem(last=False)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, dev_mode: bool = False) -> None:
        self.app = app
        self.dev_mode = dev_mode
        self.unknown = UnknownTokens()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not scope["path"].startswith("/v1"):
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
            if scheme.lower() != "bearer" or not token:
                detail = "the Authorization header must be: Bearer <api key>"
                challenge = f'{_REALM}, error="invalid_request"'
            elif not TOKEN_FORMAT.fullmatch(token) or token in self.unknown:
                # Refused without a query: no key has this form, or it was just looked up.
                detail = "unknown or revoked API key"
                challenge = f'{_REALM}, error="invalid_token"'
            else:
                services = app_state(scope.get("state", {}))
                key = services.key_cache.get(token)
                if key is None:
                    async with driver_connection(services.engine) as connection:
                        key = await find_key(connection, token)
                    if key is not None:
                        services.key_cache.put(token, key)
                if key is not None:
                    actor = Actor(id=str(key.key_id), role=key.role, name=key.name)
                else:
                    self.unknown.add(token)
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


BEARER = "HTTPBearer"
"""The API key's security scheme, as the OpenAPI document names it."""


def allowed(request: Request, permission: str) -> Actor:
    """The caller (AuthMiddleware found its key), if its role holds `permission`; else 403."""
    actor: Actor = request.scope["state"]["actor"]
    roles = PERMISSIONS[permission]
    if actor.role not in roles:
        allowed_roles = ", ".join(sorted(roles))
        raise Forbidden(f"a {actor.role} key may not do this; it needs one of: {allowed_roles}")
    return actor


def require(permission: str) -> Callable[..., Awaitable[Actor]]:
    """A route dependency: the caller's role must hold `permission` (else 403)."""
    PERMISSIONS[permission]  # an unknown permission fails at import, not per request

    async def check(request: Request) -> Actor:
        return allowed(request, permission)

    return check


def document_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Every /v1 operation takes an API key (AuthMiddleware asks for one on every /v1 path),
    documented here once: as a `Security` dependency of each route, FastAPI solved it on
    every request for nothing (the middleware has read the key by then)."""
    schema.setdefault("components", {})["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `dealledger keys create --role ROLE --name NAME`"
            " prints one.",
        }
    }
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/v1"):
            for operation in operations.values():
                operation["security"] = [{BEARER: []}]
    return schema
