"""What the API accepts as JSON: the fast check of a body says what the exact walk says."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.domain.json_values import (
    MAX_DEPTH,
    checked_size,
    encoded_size,
    loads_exact,
    unsafe_json,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN, infinities, and doubles beyond 2**53 too
    st.text(),  # NUL and lone surrogates too
    st.sampled_from(["1e400", "0.1000000000000000055511151231257827", "12345678901234567"]).map(
        lambda text: loads_exact(f"[{text}]")[0]  # numbers no double holds (InexactNumber)
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=30,
)


def _nested(depth: int) -> Any:
    value: Any = {"deal": "x"}
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=500)
@given(values)
@example(_nested(MAX_DEPTH - 1))
@example(_nested(MAX_DEPTH))
@example({"note": "a\x00b"})
@example({"amount": 9007199254740993})
@example([1e16, 2.5e-7])
@example({"id": "3e4f9a00-0000-4000-8000-00000000e5e5", "n": 1234567890123456})
def test_the_fast_check_says_what_the_walk_says(value: Any) -> None:
    problem = unsafe_json(value)
    assert checked_size(value) == (problem, encoded_size(value) if problem is None else 0)


def test_a_body_as_sent_is_measured_as_stored() -> None:
    body = loads_exact('{"summary": "caf\\u00e9 \\u2028", "n": [1, 2.5, -3]}')
    assert checked_size(body) == (None, len(json.dumps(body, ensure_ascii=False).encode()) - 5)
