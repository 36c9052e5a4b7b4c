"""C2SP signed notes (`signed-note`) carrying log checkpoints (`tlog-checkpoint`), Ed25519.

A checkpoint's body is three lines: the log's origin, its tree size, the base64 root hash.
A signature line is `— <name> <base64(key id ‖ signature)>`, the key id being the first four
bytes of SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key). Keys are written the way the Go
`golang.org/x/mod/sumdb/note` package writes them, so its tools read ours and vice versa:
verifier `name+hexid+base64(0x01 ‖ key)`, signer `PRIVATE+KEY+name+hexid+base64(0x01 ‖ seed)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = b"\x01"
_SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space


class NoteError(ValueError):
    """A note, key or checkpoint that does not parse or whose signature does not verify."""


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


def _check_name(name: str) -> str:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"a key name must be non-empty, without '+' or spaces: {name!r}")
    return name


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise NoteError(f"{what} is not valid base64") from error


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        encoded = base64.b64encode(ED25519 + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        parts = text.strip().split("+", 2)  # base64 may hold "+" too
        if len(parts) != 3:
            raise NoteError("a verifier key reads name+hexid+base64key")
        name, hex_id, encoded = parts
        key = _b64decode(encoded, "the verifier key")
        if len(key) != 33 or key[:1] != ED25519:
            raise NoteError("the verifier key is not an Ed25519 key")
        verifier = cls(_check_name(name), key[1:])
        if verifier.key_id.hex() != hex_id.lower():
            raise NoteError("the verifier key's id does not match its name and key")
        return verifier

    def verify(self, note: str) -> str:
        """The note's text if one of its signatures is this key's and verifies."""
        text, signatures = split_note(note)
        public = Ed25519PublicKey.from_public_bytes(self.public)
        for name, blob in signatures:
            if name != self.name or blob[:4] != self.key_id:
                continue
            try:
                public.verify(blob[4:], text.encode())
            except InvalidSignature as error:
                raise NoteError(f"the signature by {name} does not verify") from error
            return text
        raise NoteError(f"the note carries no signature by {self.name}")


@dataclass(frozen=True)
class Signer:
    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> Signer:
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(_check_name(name), seed)

    @property
    def verifier(self) -> Verifier:
        public = (
            Ed25519PrivateKey.from_private_bytes(self.seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        return Verifier(self.name, public)

    def encode(self) -> str:
        encoded = base64.b64encode(ED25519 + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signing key reads PRIVATE+KEY+name+hexid+base64key")
        _, _, name, hex_id, encoded = parts
        key = _b64decode(encoded, "the signing key")
        if len(key) != 33 or key[:1] != ED25519:
            raise NoteError("the signing key is not an Ed25519 key")
        signer = cls(_check_name(name), key[1:])
        if signer.verifier.key_id.hex() != hex_id.lower():
            raise NoteError("the signing key's id does not match its name and key")
        return signer

    def sign(self, text: str) -> str:
        """The signed note: the text, a blank line, this key's signature line."""
        if not text.endswith("\n"):
            raise NoteError("a note's text ends with a newline")
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(text.encode())
        blob = base64.b64encode(self.verifier.key_id + signature).decode()
        return f"{text}\n{_SIGNATURE_PREFIX}{self.name} {blob}\n"


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(text, [(signer name, key id ‖ signature)]) of a signed note."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("a signed note is text, a blank line, then signature lines")
    text, lines = note[: cut + 1], note[cut + 2 :].splitlines()
    signatures = []
    for line in lines:
        if not line.startswith(_SIGNATURE_PREFIX):
            raise NoteError(f"not a signature line: {line[:60]!r}")
        name, _, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        blob = _b64decode(encoded, "a signature")
        if len(blob) < 5:
            raise NoteError("a signature is shorter than its key id")
        signatures.append((name, blob))
    if not signatures:
        raise NoteError("the note has no signature")
    return text, signatures


@dataclass(frozen=True)
class TreeHead:
    """The body of a C2SP checkpoint: which log, how many leaves, their Merkle root."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> TreeHead:
        lines = text.split("\n")
        if len(lines) < 4 or not lines[0]:
            raise NoteError("a checkpoint reads origin, tree size and root hash, one a line")
        origin, size, root = lines[:3]
        if not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError(f"the tree size is not a decimal number: {size!r}")
        digest = _b64decode(root, "the root hash")
        if len(digest) != 32:
            raise NoteError("the root hash is not 32 bytes")
        return cls(origin, int(size), digest)


def open_checkpoint(note: str, verifier: Verifier) -> TreeHead:
    """The tree head of a signed checkpoint, once its signature verifies with `verifier`."""
    return TreeHead.parse(verifier.verify(note))
