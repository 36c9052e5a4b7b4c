"""The checkpoint signing key lives outside the database: a 0600 file made on first start,
or DEALLEDGER_SIGNING_KEY."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.events.notes import NoteError, Signer
from app.projections.log_tree import KEY_FILE, load_signer, log_tree_for
from app.settings import Settings


def test_the_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = load_signer(settings)
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signer(settings) == first  # the next start signs with the same key
    assert first.name == "dealledger.local/log"


def test_the_environment_key_wins_and_no_file_is_made(tmp_path: Path) -> None:
    mine = Signer.generate("ledger.example/log")
    settings = Settings(data_dir=tmp_path, signing_key=SecretStr(mine.encode()))
    assert load_signer(settings) == mine
    assert not (tmp_path / KEY_FILE).exists()


def test_an_unusable_key_stops_the_start_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("PRIVATE+KEY+broken\n")
    with pytest.raises(NoteError, match="log signing key is unusable"):
        log_tree_for(Settings(data_dir=tmp_path))
