"""API keys over HTTP, for admins: create (the token is shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import require
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.db import driver_connection
from app.domain.decide import Actor
from app.domain.errors import NotFound
from app.keys import ApiKey, create_key, list_keys, revoke_key

router = APIRouter(prefix="/v1/keys", tags=["keys"])
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
async def create(body: CreateKey, request: Request, admin: Admin) -> CreatedKey:
    async with driver_connection(request.app.state.engine) as connection:
        key, token = await create_key(
            connection, role=body.role, name=body.name, created_by=admin.id
        )
    return CreatedKey(**KeyOut.of(key).model_dump(), token=token)


@router.get("", summary="List API keys (never their tokens)")
async def list_(
    request: Request,
    admin: Admin,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> KeyPage:
    after = decode_cursor(cursor, "s")
    async with driver_connection(request.app.state.engine) as connection:
        keys = await list_keys(connection, after_seq=after["s"] if after else 0, limit=limit + 1)
    page = keys[:limit]
    more = len(keys) > limit
    return KeyPage(
        items=[KeyOut.of(k) for k in page],
        next_cursor=encode_cursor({"s": page[-1].seq}) if more else None,
    )


@router.post("/{key_id}/revoke", summary="Revoke a key: it stops working at once")
async def revoke(key_id: UUID, request: Request, admin: Admin) -> KeyOut:
    async with driver_connection(request.app.state.engine) as connection:
        key = await revoke_key(connection, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    return KeyOut.of(key)
