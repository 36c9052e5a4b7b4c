"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and their checks. Pure.

The groundwork for a log-wide tree over the events (issue 15): a leaf is an event's hash,
`MTH` is the tree head, `inclusion_proof` / `consistency_proof` are the audit paths of
§2.1.3 / §2.1.4, and `Frontier` keeps the complete subtrees on the right edge so an append
and a new head cost O(log n). The checks follow the verification algorithms of §2.1.3.2 and
§2.1.4.2, so an auditor can run them with nothing but a checkpoint and a proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over the leaves' hashes (already `leaf_hash`ed)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf `index` in the tree over `leaves`."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def consistency_proof(size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): that the tree of the first `size` leaves is a prefix of this one."""
    if not 0 < size <= len(leaves):
        raise ValueError(f"no consistency proof from {size} to {len(leaves)}")
    return _subproof(size, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root(leaves[:k])]


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: whether `leaf` is at `index` of the tree of `size` with that root."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == expected_root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: whether the tree of `second` leaves extends the one of `first`."""
    if first == second:
        return not proof and first_root == second_root
    if not 0 < first < second or not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first tree is a subtree itself
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root


@dataclass
class Frontier:
    """The right edge of the tree: the root of each complete subtree, largest first. An
    append merges equal-sized subtrees (O(log n)); the head folds them right to left."""

    size: int = 0
    subtrees: list[tuple[int, bytes]] = field(default_factory=list)
    """(height, hash) pairs, heights strictly decreasing."""

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf; returns the complete subtrees it completes, as (height, index, hash)
        with `index` counted among subtrees of that height (the leaf itself first)."""
        height, node = 0, leaf
        completed = [(0, self.size, leaf)]
        while self.subtrees and self.subtrees[-1][0] == height:
            _, left = self.subtrees.pop()
            height, node = height + 1, node_hash(left, node)
            completed.append((height, (self.size + 1 >> height) - 1, node))
        self.subtrees.append((height, node))
        self.size += 1
        return completed

    @classmethod
    def of(cls, size: int, get: NodeGetter) -> Frontier:
        """The frontier of a tree of `size` leaves from its stored complete subtrees."""
        return cls(size, [(height, get(height, index)) for height, index in edge(size)])

    def root(self) -> bytes:
        if not self.subtrees:
            return EMPTY_ROOT
        node = self.subtrees[-1][1]
        for _, left in reversed(self.subtrees[:-1]):
            node = node_hash(left, node)
        return node


NodeGetter = Callable[[int, int], bytes]
"""(height, index) -> the hash of the complete subtree over leaves
[index * 2**height, (index + 1) * 2**height)."""


def edge(size: int) -> list[tuple[int, int]]:
    """The complete subtrees a tree of `size` leaves is made of, largest first."""
    nodes, start = [], 0
    for height in range(size.bit_length() - 1, -1, -1):
        if size >> height & 1:
            nodes.append((height, start >> height))
            start += 1 << height
    return nodes


def subtree_hash(start: int, end: int, get: NodeGetter) -> bytes:
    """MTH of leaves [start, end) from complete subtrees: a range of RFC 9162's recursion
    always starts at a multiple of its largest power-of-two part, so each piece is stored."""
    n = end - start
    if n & (n - 1) == 0:
        return get(n.bit_length() - 1, start // n)
    k = _split(n)
    return node_hash(subtree_hash(start, start + k, get), subtree_hash(start + k, end, get))


def tree_root(size: int, get: NodeGetter) -> bytes:
    return subtree_hash(0, size, get) if size else EMPTY_ROOT


def inclusion_path(index: int, size: int, get: NodeGetter) -> list[bytes]:
    """`inclusion_proof` from stored subtrees: O(log n) of them."""
    if not 0 <= index < size:
        raise IndexError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_hash(start + k, end, get))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, get))
            start += k
    return path[::-1]


def consistency_path(first: int, size: int, get: NodeGetter) -> list[bytes]:
    """`consistency_proof` from stored subtrees."""
    if not 0 < first <= size:
        raise ValueError(f"no consistency proof from {first} to {size}")
    path: list[bytes] = []
    start, end, m, complete = 0, size, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            path.append(subtree_hash(start + k, end, get))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, get))
            start, m, complete = start + k, m - k, False
    if not complete:
        path.append(subtree_hash(start, end, get))
    return path[::-1]


def needed(compute: Callable[[NodeGetter], object]) -> set[tuple[int, int]]:
    """Which stored subtrees `compute` reads: run it once on placeholders. The shape of every
    computation here depends on sizes and indexes only, never on hash values, so a caller
    can fetch exactly these in one query and run it again for real."""
    keys: set[tuple[int, int]] = set()

    def record(height: int, index: int) -> bytes:
        keys.add((height, index))
        return bytes(32)

    compute(record)
    return keys


def getter(nodes: Iterable[tuple[int, int, bytes]]) -> NodeGetter:
    found = {(height, index): digest for height, index, digest in nodes}

    def get(height: int, index: int) -> bytes:
        try:
            return found[(height, index)]
        except KeyError:
            raise LookupError(f"subtree ({height}, {index}) is not stored") from None

    return get
