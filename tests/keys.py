"""API keys every test database starts with: one per role, with known tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from app.keys import ROLES, create_key


@dataclass(frozen=True)
class TestKey:
    role: str
    name: str
    key_id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


_NAMES = {
    "ingest": "gmail-sync",
    "rep": "rick.rep",
    "manager": "maria.manager",
    "auditor": "audrey.auditor",
    "admin": "ada.admin",
}
KEYS = {
    role: TestKey(
        role,
        _NAMES[role],
        uuid.uuid5(uuid.NAMESPACE_URL, f"dealledger-test-key:{role}"),
        f"dl_test_{role}_token",
    )
    for role in ROLES
}


async def seed_keys(connection: asyncpg.Connection) -> None:
    for key in KEYS.values():
        await create_key(
            connection, role=key.role, name=key.name, token=key.token, key_id=key.key_id
        )
