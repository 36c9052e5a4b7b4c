"""Opaque cursors for keyset pagination: base64url JSON; anything tampered is a 422."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from app.domain.errors import InvalidRequest

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, *keys: str) -> dict[str, int] | None:
    """The cursor's integer fields `keys`, or None for the first page."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(value, dict) or set(value) != set(keys):
            raise ValueError("unexpected fields")
        if not all(isinstance(value[k], int) and not isinstance(value[k], bool) for k in keys):
            raise ValueError("unexpected values")
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not valid: use next_cursor from a previous page") from exc
    return {k: int(value[k]) for k in keys}


def decode_bigint_cursor(cursor: str | None, *keys: str) -> dict[str, int] | None:
    """decode_cursor for cursors of bigint columns: beyond them PostgreSQL could not compare
    the value, so a forged one is a 422 here, not a 500 there."""
    after = decode_cursor(cursor, *keys)
    if after and not all(-(2**63) <= v < 2**63 for v in after.values()):
        raise InvalidRequest("cursor is not valid: use next_cursor from a previous page")
    return after
