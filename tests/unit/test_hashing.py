"""The fast canonical encoding is byte for byte RFC 8785 (so stored hash chains still verify)."""

from __future__ import annotations

import enum
import json
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from app.events.hashing import (
    _as_json_number_domain,
    canonical_bytes,
    canonical_json,
    chain_hash,
    encode_events,
    event_parts,
    expected_hash,
    json_text,
    utc_text,
)
from app.events.log import NewEvent, RecordedEvent

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


def reference(document: Any) -> bytes | type[Exception]:
    try:
        encoded: bytes = rfc8785.dumps(_as_json_number_domain(document))
        return encoded
    except Exception as error:
        return type(error)


@settings(max_examples=400)
@given(documents)
def test_canonical_json_is_rfc8785(document: Any) -> None:
    expected = reference(document)
    if isinstance(expected, bytes):
        assert canonical_json(document) == expected
    else:
        try:
            canonical_json(document)
        except Exception as error:
            assert isinstance(error, expected)
        else:
            raise AssertionError(f"rfc8785 refused {document!r}; canonical_json did not")


def test_an_event_like_document_takes_the_fast_path_and_matches() -> None:
    document: Any = {
        "type": "EvidenceRecorded",
        "data": {"criteria": ["pain_documented"], "summary": 'a "quote"\n\u00e9\u2028\x7f'},
        "metadata": {"actor": {"id": "ann", "role": "rep"}},
        "version": 3,
        "schema_version": 1,
    }
    assert canonical_json(document) == rfc8785.dumps(document)


def test_subclasses_of_json_types_hash_as_their_plain_values() -> None:
    """An enum member or an OrderedDict in event data is not "plain" (exact types) and
    takes the general way: the same bytes as the plain value, so the same hash."""

    class Stage(enum.StrEnum):
        DISCOVERY = "discovery"

    class Count(enum.IntEnum):
        THREE = 3

    odd = {"stage": Stage.DISCOVERY, "n": Count.THREE, "m": OrderedDict(b=1, a=[Stage.DISCOVERY])}
    plain = {"stage": "discovery", "n": 3, "m": {"b": 1, "a": ["discovery"]}}
    assert canonical_json(odd) == canonical_json(plain) == rfc8785.dumps(plain)  # type: ignore[arg-type]
    at = datetime(2026, 12, 7, tzinfo=UTC)
    stream = uuid.uuid4()
    ids = uuid.uuid4()
    events = [NewEvent("StageAdvanced", data, event_id=ids) for data in (odd, plain)]
    (one,), (other,) = (encode_events(stream, 0, None, [event], at) for event in events)
    assert one[-1] == other[-1]  # the hash; jsonb keeps no key order, so the texts may differ
    assert json.loads(one[4]) == json.loads(other[4])


def _general(event: NewEvent, stream: uuid.UUID, at: datetime) -> bytes:
    """The hash as the store computed it before the fast path: a JSON round trip of each."""
    canonical = canonical_bytes(
        stream_id=stream,
        version=7,
        event_id=event.event_id,
        type=event.type,
        schema_version=1,
        data=json.loads(json_text(event.data)),
        metadata=json.loads(json_text(event.metadata)),
        occurred_at=event.occurred_at or at,
        recorded_at=at,
    )
    return chain_hash(b"p" * 32, canonical)


@settings(max_examples=300)
@given(documents, documents, st.text(min_size=1, max_size=30), st.booleans())
def test_encoded_events_hash_what_reads_back_whichever_way_they_were_encoded(
    data: Any, metadata: Any, event_type: str, dated: bool
) -> None:
    """encode_events puts plain events' canonical bytes together from the texts it stores;
    the hash must be the one `verify` recomputes from what PostgreSQL gives back (the stored
    JSON, parsed), and what it refuses the general way refuses too."""
    stream, event_id = uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    event = NewEvent(
        event_type, data, event_id, 1, metadata, at - timedelta(days=2) if dated else None
    )
    try:
        expected = _general(event, stream, at)
    except Exception as refusal:
        with pytest.raises(type(refusal)):
            encode_events(stream, 6, b"p" * 32, [event], at)
        with pytest.raises(type(refusal)):
            event_parts(stream, 7, event)
        return
    # A single append: the database puts the recording time between the parts.
    *_, parts = event_parts(stream, 7, event)
    assert chain_hash(b"p" * 32, utc_text(at).encode().join(parts)) == expected
    (row,) = encode_events(stream, 6, b"p" * 32, [event], at)
    version, stored_id, stored_type, schema, data_text, metadata_text, occurred, prev, digest = row
    assert (version, stored_id, stored_type, schema) == (7, event_id, event_type, 1)
    assert digest == expected
    stored = RecordedEvent(
        position=1,
        stream_id=stream,
        version=version,
        event_id=event_id,
        type=event_type,
        schema_version=1,
        data=json.loads(data_text),
        metadata=json.loads(metadata_text),
        occurred_at=occurred,
        recorded_at=at,
        transaction_id=1,
        prev_hash=prev,
        hash=digest,
    )
    assert digest == expected_hash(stored, b"p" * 32)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    )
)
def test_utc_text_is_the_fixed_utc_format_at_every_year_and_offset(moment: datetime) -> None:
    """The hashed times' text: one format whichever way it is produced (any year, offset)."""
    assert utc_text(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
