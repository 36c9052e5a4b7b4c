"""Identifiers derived from what a caller sent, so a retry maps to the same ids.

An id derived from an Idempotency-Key or a CloudEvent's (source, id) makes a retried command
a no-op in the store itself, even if the process died before it could remember the response.
Pure: every id here is a UUIDv5 of its inputs, or a fresh UUIDv4 when there is no key.
"""

from __future__ import annotations

import uuid
from typing import Literal
from uuid import UUID

_IDEMPOTENT_IDS = uuid.UUID("6f1c1d4e-2a4b-4f57-9a51-0d2f3c4b5a69")
_EXTERNAL_REF_IDS = uuid.UUID("0b6f6a52-5d8e-4b7e-8f3e-5b1c2a9d7e41")
_CLOUDEVENT_IDS = uuid.UUID("3d7e1f0c-8a51-4c3e-9b8e-2f6a4d1c7b90")
_PIPELINE_STREAMS = uuid.UUID("9a4c2e71-3b5d-4f08-8c6e-1d2b7a5f3e90")

Entity = Literal["evidence", "blocker", "stakeholder"]


def deal_id_for_external_ref(source: str, external_id: str) -> UUID:
    """Deals opened with an external reference get an id derived from it: one deal per ref."""
    return uuid.uuid5(_EXTERNAL_REF_IDS, f"{source}\x00{external_id}")


def new_deal_id(actor_id: str, idempotency_key: str | None) -> UUID:
    """A new deal's id: derived from the caller's Idempotency-Key, else random."""
    if idempotency_key is None:
        return uuid.uuid4()
    return uuid.uuid5(_IDEMPOTENT_IDS, f"deal:{actor_id}:{idempotency_key}")


def command_event_id(deal_id: UUID, actor_id: str, idempotency_key: str | None, index: int) -> UUID:
    """The id of a command's `index`-th event: derived from the caller's Idempotency-Key (keys
    are scoped per API key, so two callers reusing one never collide), else random."""
    if idempotency_key is None:
        return uuid.uuid4()
    return uuid.uuid5(_IDEMPOTENT_IDS, f"{deal_id}:{actor_id}:{idempotency_key}:{index}")


def follow_on_event_id(first_event_id: UUID, offset: int) -> UUID:
    """The id of a further event decided from one item whose first event has `first_event_id`."""
    return uuid.uuid5(first_event_id, str(offset))


def entity_id(deal_id: UUID, entity: Entity, actor_id: str, idempotency_key: str | None) -> UUID:
    """The id of an evidence item, blocker or stakeholder a command creates (scoped like
    `command_event_id`)."""
    if idempotency_key is None:
        return uuid.uuid4()
    return uuid.uuid5(deal_id, f"{entity}:{actor_id}:{idempotency_key}")


def cloudevent_event_id(source: str, ce_id: str) -> UUID:
    """(source, id) is a CloudEvent's permanent identity: the same one maps to the same event."""
    return uuid.uuid5(_CLOUDEVENT_IDS, f"{source}\x00{ce_id}")


def cloudevent_evidence_id(source: str, ce_id: str) -> UUID:
    return uuid.uuid5(_CLOUDEVENT_IDS, f"evidence\x00{source}\x00{ce_id}")


def pipeline_stream_id(key: str) -> UUID:
    """The stream a pipeline's versions are stored in: one per key, derived from it."""
    return uuid.uuid5(_PIPELINE_STREAMS, key)
