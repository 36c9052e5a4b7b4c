"""RFC 9162 Merkle trees: the incremental frontier agrees with the recursive definition, every
inclusion and consistency proof verifies, and any tampering with them fails."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from app.events.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_path,
    consistency_proof,
    getter,
    inclusion_path,
    inclusion_proof,
    leaf_hash,
    needed,
    node_hash,
    root,
    tree_root,
    verify_consistency,
    verify_inclusion,
)


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"event {i}".encode()) for i in range(n)]


MANY = leaves(130)


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
    for size in range(1, 65):
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
                assert not verify_inclusion(index, size, leaf, [*proof, proof[0]], head)
            # A size whose path is longer or shorter: the proof is not fully consumed or
            # runs out (sizes with a path of the same shape are indistinguishable by design).
            for wrong in {size - 1, size + 1, 2 * size, 2 * size + 1} - {index}:
                if wrong > index and len(inclusion_proof(index, MANY[:wrong])) != len(proof):
                    assert not verify_inclusion(index, wrong, leaf, proof, head)


def test_every_consistency_proof_verifies_and_a_rewritten_history_fails() -> None:
    for second in range(1, 65):
        tree = leaves(second)
        for first in range(1, second + 1):
            proof = consistency_proof(first, tree)
            old, new = root(tree[:first]), root(tree)
            assert verify_consistency(first, second, old, new, proof)
            rewritten = root([leaf_hash(b"edited"), *tree[1:first]])
            if first < second:
                assert not verify_consistency(first, second, rewritten, new, proof)
                assert not verify_consistency(first, second, old, bytes(32), proof)
                assert not verify_consistency(first, second, old, new, proof[:-1])
                assert not verify_consistency(first, second, old, new, [*proof, proof[-1]])
                for wrong in {second - 1, second + 1, 2 * second, 2 * second + 1}:
                    if wrong <= first:
                        continue
                    if len(consistency_proof(first, MANY[:wrong])) != len(proof):
                        assert not verify_consistency(first, wrong, old, new, proof)
                bent = [bytes(32), *proof[1:]]
                assert not verify_consistency(first, second, old, new, bent)


@given(st.integers(1, 300), st.data())
def test_proofs_hold_for_any_size(size: int, data: st.DataObject) -> None:
    tree = leaves(size)
    index = data.draw(st.integers(0, size - 1))
    first = data.draw(st.integers(1, size))
    head = root(tree)
    assert verify_inclusion(index, size, tree[index], inclusion_proof(index, tree), head)
    proof = consistency_proof(first, tree)
    assert verify_consistency(first, size, root(tree[:first]), head, proof)


def stored(size: int) -> tuple[list[bytes], list[tuple[int, int, bytes]]]:
    """Leaves and every complete subtree the sequencer stores for them."""
    tree, frontier, nodes = leaves(size), Frontier(), []
    for leaf in tree:
        nodes.extend(frontier.append(leaf))
    return tree, nodes


def test_proofs_from_stored_subtrees_equal_the_recursive_definition() -> None:
    tree, nodes = stored(64)
    assert len(nodes) == 2 * 64 - 1  # every complete subtree once, leaves included
    get = getter(nodes)
    for size in range(1, 65):
        assert tree_root(size, get) == root(tree[:size])
        assert Frontier.of(size, get).root() == root(tree[:size])
        for index in range(size):
            assert inclusion_path(index, size, get) == inclusion_proof(index, tree[:size])
        for first in range(1, size + 1):
            assert consistency_path(first, size, get) == consistency_proof(first, tree[:size])


@given(st.integers(1, 5000), st.data())
def test_a_proof_reads_logarithmically_many_stored_subtrees(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    first = data.draw(st.integers(1, size))
    bound = 2 * size.bit_length() + 2
    assert len(needed(lambda get: inclusion_path(index, size, get))) <= bound
    assert len(needed(lambda get: consistency_path(first, size, get))) <= bound
