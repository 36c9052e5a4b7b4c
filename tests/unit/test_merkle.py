"""RFC 9162 Merkle trees: the incremental frontier agrees with the recursive definition, every
inclusion and consistency proof verifies, and any tampering with them fails."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from app.events.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"event {i}".encode()) for i in range(n)]


def test_hashes_are_domain_separated_as_rfc_9162_says() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    a, b, c = leaves(3)
    # Three leaves: the left subtree holds the largest power of two below 3 (two leaves).
    assert root([a, b, c]) == node_hash(node_hash(a, b), c)


def test_the_frontier_gives_the_same_head_as_the_definition_after_every_append() -> None:
    frontier = Frontier()
    tree = leaves(70)
    for size, leaf in enumerate(tree, start=1):
        frontier.append(leaf)
        assert frontier.size == size
        assert frontier.root() == root(tree[:size])
        assert len(frontier.subtrees) == bin(size).count("1")  # O(log n) state


def test_every_inclusion_proof_verifies_and_tampering_fails() -> None:
    for size in range(1, 34):
        tree = leaves(size)
        head = root(tree)
        for index, leaf in enumerate(tree):
            proof = inclusion_proof(index, tree)
            assert verify_inclusion(index, size, leaf, proof, head)
            assert not verify_inclusion(index, size, leaf_hash(b"forged"), proof, head)
            assert not verify_inclusion(index, size, leaf, proof, root(leaves(size + 1)))
            if proof:
                bent = [bytes(32), *proof[1:]]
                assert not verify_inclusion(index, size, leaf, bent, head)
                assert not verify_inclusion(index, size, leaf, proof[:-1], head)


def test_every_consistency_proof_verifies_and_a_rewritten_history_fails() -> None:
    for second in range(1, 34):
        tree = leaves(second)
        for first in range(1, second + 1):
            proof = consistency_proof(first, tree)
            old, new = root(tree[:first]), root(tree)
            assert verify_consistency(first, second, old, new, proof)
            rewritten = root([leaf_hash(b"edited"), *tree[1:first]])
            if first < second:
                assert not verify_consistency(first, second, rewritten, new, proof)
                assert not verify_consistency(first, second, old, bytes(32), proof)


@given(st.integers(1, 300), st.data())
def test_proofs_hold_for_any_size(size: int, data: st.DataObject) -> None:
    tree = leaves(size)
    index = data.draw(st.integers(0, size - 1))
    first = data.draw(st.integers(1, size))
    head = root(tree)
    assert verify_inclusion(index, size, tree[index], inclusion_proof(index, tree), head)
    proof = consistency_proof(first, tree)
    assert verify_consistency(first, size, root(tree[:first]), head, proof)
