"""C2SP signed notes and checkpoints: the formats other tools read, and every way a note
can fail to verify."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.events.notes import NoteError, Signer, TreeHead, Verifier, open_checkpoint, split_note

SIGNER = Signer.generate("example.com/log")


def test_keys_round_trip_in_the_go_note_formats() -> None:
    for _ in range(20):  # base64 of a random key holds "+" often enough to matter
        signer = Signer.generate("example.com/log")
        assert Signer.parse(signer.encode()) == signer
        assert Verifier.parse(signer.verifier.encode()) == signer.verifier
    name, hex_id, key = SIGNER.verifier.encode().split("+", 2)
    assert name == "example.com/log"
    assert base64.b64decode(key)[:1] == b"\x01" and len(base64.b64decode(key)) == 33
    expected = hashlib.sha256(b"example.com/log\n\x01" + SIGNER.verifier.public).digest()[:4]
    assert bytes.fromhex(hex_id) == expected
    assert SIGNER.encode().startswith("PRIVATE+KEY+example.com/log+" + hex_id + "+")


def test_a_checkpoint_reads_origin_size_and_root() -> None:
    head = TreeHead("example.com/log", 12, hashlib.sha256(b"root").digest())
    note = SIGNER.sign(head.text())
    text, signatures = split_note(note)
    assert text == f"example.com/log\n12\n{base64.b64encode(head.root).decode()}\n"
    assert note.startswith(text + "\n\u2014 example.com/log ")
    assert [name for name, _ in signatures] == ["example.com/log"]
    assert open_checkpoint(note, SIGNER.verifier) == head


@pytest.mark.parametrize(
    ("bend", "why"),
    [
        (lambda n: n.replace("\n12\n", "\n13\n"), "does not verify"),
        (lambda n: n.replace("example.com/log\n", "example.org/log\n", 1), "does not verify"),
        (lambda n: n.rsplit("\n\n", 1)[0] + "\n", "blank line"),
        (lambda n: n + "not a signature\n", "not a signature line"),
        (lambda n: n.replace("\u2014 example.com/log", "\u2014 someone.else"), "no signature by"),
    ],
)
def test_a_bent_note_does_not_open(bend: object, why: str) -> None:
    head = TreeHead("example.com/log", 12, hashlib.sha256(b"root").digest())
    note = SIGNER.sign(head.text())
    with pytest.raises(NoteError, match=why):
        open_checkpoint(bend(note), SIGNER.verifier)  # type: ignore[operator]


def test_another_key_of_the_same_name_does_not_open_it() -> None:
    note = SIGNER.sign(TreeHead("example.com/log", 1, bytes(32)).text())
    with pytest.raises(NoteError):
        open_checkpoint(note, Signer.generate("example.com/log").verifier)


@pytest.mark.parametrize(
    "text",
    ["", "name+abcd", "name+00000000+AQ==", "na me+00000000+" + "A" * 44, "PRIVATE+KEY+x"],
)
def test_malformed_keys_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(NoteError):
        Verifier.parse(text)
    with pytest.raises(NoteError):
        Signer.parse(text)


@settings(max_examples=50)
@given(st.integers(0, 2**63 - 1), st.binary(min_size=32, max_size=32))
def test_any_tree_head_survives_signing(size: int, root: bytes) -> None:
    head = TreeHead("example.com/log", size, root)
    assert open_checkpoint(SIGNER.sign(head.text()), SIGNER.verifier) == head
