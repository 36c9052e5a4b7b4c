"""API keys: bearer tokens with one role each. Only a token's SHA-256 is ever stored."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

ROLES = ("ingest", "rep", "manager", "auditor", "admin")
TOKEN_PREFIX = "dl_"


@dataclass(frozen=True)
class ApiKey:
    key_id: UUID
    name: str
    role: str
    hint: str
    """The token's first characters, to tell keys apart in listings."""
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    seq: int


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_COLUMNS = "key_id, name, role, hint, created_at, created_by, revoked_at, seq"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(**dict(row))


async def create_key(
    connection: asyncpg.Connection,
    *,
    role: str,
    name: str,
    created_by: str | None = None,
    token: str | None = None,
    key_id: UUID | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its token (shown once; only the hash is kept)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    token = token or new_token()
    row = await connection.fetchrow(
        f"INSERT INTO api_keys (key_id, name, role, token_hash, hint, created_by)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
        key_id or uuid.uuid4(),
        name,
        role,
        token_hash(token),
        token[: len(TOKEN_PREFIX) + 4],
        created_by,
    )
    return _key(row), token


async def find_key(connection: asyncpg.Connection, token: str) -> ApiKey | None:
    """The live (unrevoked) key this token belongs to."""
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash(token),
    )
    return _key(row) if row else None


async def list_keys(
    connection: asyncpg.Connection, *, after_seq: int = 0, limit: int = 1000
) -> list[ApiKey]:
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM api_keys WHERE seq > $1 ORDER BY seq LIMIT $2", after_seq, limit
    )
    return [_key(r) for r in rows]


async def revoke_key(connection: asyncpg.Connection, key_id: UUID) -> ApiKey | None:
    """Revoke a key (idempotent: revoking twice keeps the first time). None if unknown."""
    row = await connection.fetchrow(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1"
        f" RETURNING {_COLUMNS}",
        key_id,
    )
    return _key(row) if row else None


class KeyCache:
    """Live keys this process found recently, by token hash, for `ttl` seconds: a command
    then costs no key lookup. A revocation through this process clears it at once; one made
    elsewhere (another process, the CLI) takes effect here within `ttl` (0: no cache)."""

    def __init__(self, ttl: float = 5.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._keys: dict[bytes, tuple[ApiKey, float]] = {}

    def get(self, token: str) -> ApiKey | None:
        found = self._keys.get(token_hash(token))
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def put(self, token: str, key: ApiKey) -> None:
        if self.ttl <= 0:
            return
        if len(self._keys) >= self.size:
            self._keys.clear()  # bounded; a full cache refills from lookups
        self._keys[token_hash(token)] = (key, time.monotonic() + self.ttl)

    def clear(self) -> None:
        self._keys.clear()
