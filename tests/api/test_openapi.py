from __future__ import annotations

from app.openapi import OPENAPI_PATH, render


def test_committed_openapi_matches_the_app() -> None:
    assert OPENAPI_PATH.read_text() == render(), (
        "openapi/openapi.json drifted from the app: run `python -m app.openapi` and commit it"
    )
