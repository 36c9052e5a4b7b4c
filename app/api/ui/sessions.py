"""Sign-in sessions for the pages: an unguessable cookie whose hash names an API key.

The key itself never leaves the sign-in form: the cookie is a fresh token, and a session
lives only while its key does (revoking the key ends every session made with it).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import asyncpg

from app.domain.decide import Actor
from app.keys import ApiKey, token_hash

COOKIE = "dealledger_session"
LIFETIME = timedelta(hours=8)
SIGN_IN_ROLES = frozenset({"rep", "manager", "auditor", "admin"})
"""Who may read the pages: every role but ingest (a machine's key)."""


async def start_session(connection: asyncpg.Connection, key: ApiKey) -> str:
    token = secrets.token_urlsafe(32)
    await connection.execute(
        "INSERT INTO ui_sessions (token_hash, key_id, expires_at) VALUES ($1, $2, now() + $3)",
        token_hash(token),
        key.key_id,
        LIFETIME,
    )
    return token


async def session_actor(connection: asyncpg.Connection, token: str | None) -> Actor | None:
    """Who the cookie signs in, if its session has not expired and its key is not revoked."""
    if not token or len(token) > 100:
        return None
    row = await connection.fetchrow(
        "SELECT k.key_id, k.role, k.name FROM ui_sessions s JOIN api_keys k USING (key_id)"
        " WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL",
        token_hash(token),
    )
    return Actor(id=str(row["key_id"]), role=row["role"], name=row["name"]) if row else None


async def end_session(connection: asyncpg.Connection, token: str | None) -> None:
    if token:
        await connection.execute("DELETE FROM ui_sessions WHERE token_hash = $1", token_hash(token))
    await connection.execute("DELETE FROM ui_sessions WHERE expires_at < now()")
