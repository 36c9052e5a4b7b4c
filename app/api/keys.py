"""API keys over HTTP, for admins: create (the token is shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from app import keys as key_store
from app.api.auth import require
from app.api.deps import ConnectionDep, ServicesDep
from app.api.json_bodies import ExactJsonRoute
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.domain.decide import Actor
from app.domain.errors import NotFound
from app.keys import ApiKey

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=ExactJsonRoute)
Admin = Annotated[Actor, Depends(require("keys"))]
Role = Literal["ingest", "rep", "manager", "auditor", "admin"]


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Role


class KeyOut(BaseModel):
    key_id: UUID
    name: str
    role: str
    hint: str
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            key_id=key.key_id,
            name=key.name,
            role=key.role,
            hint=key.hint,
            created_at=key.created_at,
            created_by=key.created_by,
            revoked_at=key.revoked_at,
        )


class CreatedKey(KeyOut):
    token: str = Field(description="The bearer token. Shown this once; only its hash is kept.")


class KeyPage(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


@router.post("", status_code=201, summary="Create an API key; the token is shown once")
async def create_key(
    body: CreateKey, response: Response, connection: ConnectionDep, admin: Admin
) -> CreatedKey:
    key, token = await key_store.create_key(
        connection, role=body.role, name=body.name, created_by=admin.id
    )
    response.headers["Cache-Control"] = "no-store"  # the body holds the secret
    return CreatedKey(**KeyOut.of(key).model_dump(), token=token)


@router.get("", summary="List API keys (never their tokens)")
async def list_keys(
    connection: ConnectionDep,
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> KeyPage:
    after = decode_cursor(cursor, "s")
    keys = await key_store.list_keys(
        connection, after_seq=after["s"] if after else 0, limit=limit + 1
    )
    page = keys[:limit]
    more = len(keys) > limit
    return KeyPage(
        items=[KeyOut.of(k) for k in page],
        next_cursor=encode_cursor({"s": page[-1].seq}) if more else None,
    )


@router.post(
    "/{key_id}/revoke",
    summary="Revoke a key: it stops working at once (other processes: within their key cache's"
    " DEALLEDGER_KEY_CACHE_SECONDS)",
)
async def revoke_key(
    key_id: UUID, connection: ConnectionDep, services: ServicesDep, admin: Admin
) -> KeyOut:
    key = await key_store.revoke_key(connection, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    services.key_cache.clear()  # at once here; other processes within their cache's ttl
    return KeyOut.of(key)
