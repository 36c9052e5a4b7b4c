"""The fast canonical encoding is byte for byte RFC 8785 (so stored hash chains still verify)."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from app.events.hashing import _as_json_number_domain, canonical_json

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
