"""Exact and MinHash-LSH near-duplicate detection.

Exact: a hash of the normalized text (case-folded, whitespace collapsed); the smallest id of
each hash group survives. Fuzzy: MinHash signatures (datasketch) of word n-gram shingles,
indexed by datasketch's MinHashLSH (bands x rows chosen for the threshold); candidate pairs are
edges, connected components are clusters, and the smallest id of a cluster survives.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

# datasketch 2.x default hashing: 32-bit affine permutations of 32-bit hashes.
SCHEME = "affine32"
_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    return _WS.sub(" ", text.casefold()).strip()


def text_hash(text: str) -> str:
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).hexdigest()


def shingles(text: str, n: int) -> set[bytes]:
    words = _WORD.findall(text.casefold())
    if len(words) <= n:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


def signatures(texts: Iterable[str], ngram: int, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures, one row of `num_perm` uint32 values per text."""
    sets = [list(shingles(t, ngram)) for t in texts]
    if not sets:
        return np.zeros((0, num_perm), dtype=np.uint32)
    mhs = MinHash.bulk(sets, num_perm=num_perm, seed=seed, scheme=SCHEME)
    return np.stack([m.hashvalues for m in mhs]).astype(np.uint32)


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller id is the root, so a cluster's root is its survivor.
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo


def near_duplicate_clusters(ids: list[str], sigs: np.ndarray, threshold: float, num_perm: int,
                            seed: int) -> dict[str, str]:
    """Map each near-duplicate document id to the surviving id of its cluster (survivors absent)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    minhashes = [LeanMinHash(seed=seed, hashvalues=row, scheme=SCHEME) for row in sigs]
    with lsh.insertion_session() as session:
        for doc_id, mh in zip(ids, minhashes):
            session.insert(doc_id, mh, check_duplication=False)
    uf = UnionFind()
    for doc_id, mh in zip(ids, minhashes):
        for other in lsh.query(mh):
            if other != doc_id:
                uf.union(doc_id, other)
    return {doc_id: uf.find(doc_id) for doc_id in uf.parent if uf.find(doc_id) != doc_id}
