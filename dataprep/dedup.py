"""Duplicate detection, the pure parts: text digests, MinHash signatures, LSH bands, candidate
pairs, the steps of distributed connected components and the survivor rule. No files and no Ray here:
dataprep/dedup_stages.py runs these as tasks over files.

Signatures follow datasketch's "affine32" scheme value for value: each shingle's 32-bit hash
(dataprep/shingling.py) is pre-mixed by the MurmurHash3 finalizer, permuted by a_k * h + b_k
mod 2^32 with datasketch's (a_k, b_k) for the seed, and the minimum kept. So a signature equals
that of `datasketch.MinHash(num_perm, seed, hashfunc=f)` updated with the same shingles, where f
is the shingle hash.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
from datasketch import MinHash

from dataprep.shingling import M64, SHINGLE_HASHES, fmix32, fmix64

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _WS.sub(" ", text.casefold()).strip()


def text_digests(texts: Sequence[str]) -> np.ndarray:
    """128-bit BLAKE2b of each normalized text, as (n, 2) uint64: equal rows = exact duplicates."""
    raw = b"".join(hashlib.blake2b(normalize(t).encode("utf-8"), digest_size=16).digest() for t in texts)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2)


def _batches(texts: Sequence[str], chars: int) -> Iterator[tuple[int, int]]:
    """Ranges [lo, hi) of consecutive texts, each of at least `chars` characters together but the
    last."""
    lo, total = 0, 0
    for i, text in enumerate(texts):
        total += len(text)
        if total >= chars:
            yield lo, i + 1
            lo, total = i + 1, 0
    if lo < len(texts):
        yield lo, len(texts)


class MinHasher:
    """MinHash signatures of word n-gram shingles, datasketch "affine32" values, vectorized."""

    # Texts are shingled about this many characters at a time: word hashing's per-character
    # arrays then stay in the CPU cache (twice as fast as one step over a large batch).
    CHUNK = 1 << 16
    # Shingles are permuted at most BLOCK shingles by PERMS permutations per numpy step, in a
    # PERMS x BLOCK uint32 buffer (1 MiB: cache-resident, whatever a text's length). Long rows
    # keep numpy on its fast loops: on rows shorter than its ufunc buffer (np.getbufsize(), 8192)
    # the multiply and add by a broadcast (a, b) column measured 2-3x slower.
    BLOCK = 16384
    PERMS = 16

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5, hashfunc: str = "wordhash"):
        if hashfunc not in SHINGLE_HASHES:
            raise ValueError(f"dedup.hashfunc={hashfunc!r}: choose one of {sorted(SHINGLE_HASHES)}")
        self.num_perm, self.ngram = num_perm, ngram
        self._shingle_hashes = SHINGLE_HASHES[hashfunc]
        # datasketch's own permutation parameters for (num_perm, seed), not a re-derivation.
        self._a, self._b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """One row of num_perm uint32 per text."""
        out = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        # One reused buffer: a fresh array per step costs page faults.
        buffer = np.empty((min(self.PERMS, self.num_perm), self.BLOCK), dtype=np.uint32)
        for lo, hi in _batches(texts, self.CHUNK):
            hashes, counts = self._shingle_hashes(texts[lo:hi], self.ngram)
            self._lower(out[lo:hi], fmix32(hashes), counts, buffer)
        return out

    def _lower(self, out: np.ndarray, hashed: np.ndarray, counts: np.ndarray, buffer: np.ndarray) -> None:
        """Lower each text's row of `out` to the minima of its shingles' permuted hashes: `hashed`
        holds the texts' shingle hashes in order, counts[i] (at least 1) of text i."""
        first = np.cumsum(counts) - counts  # each text's first shingle
        for lo in range(0, len(hashed), self.BLOCK):
            hi = min(lo + self.BLOCK, len(hashed))
            # Texts t0 .. t1 - 1 have shingles in [lo, hi); each one's first shingle in the block
            # (0 for one begun in an earlier block).
            t0, t1 = np.searchsorted(first, lo, side="right") - 1, np.searchsorted(first, hi)
            segments = np.maximum(first[t0:t1] - lo, 0)
            for p in range(0, self.num_perm, self.PERMS):
                q = min(p + self.PERMS, self.num_perm)
                # One row per permutation, so that each text's minimum is a reduceat along rows;
                # uint32 arithmetic wraps mod 2^32, as datasketch's.
                permuted = buffer[:q - p, :hi - lo]
                np.multiply(self._a[p:q, None], hashed[lo:hi], out=permuted)
                permuted += self._b[p:q, None]
                lowest = np.minimum.reduceat(permuted, segments, axis=1).T
                np.minimum(out[t0:t1, p:q], lowest, out=out[t0:t1, p:q])


def lsh_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows) as datasketch.MinHashLSH chooses them: over every b * r <= num_perm, the least
    fp_weight * P(candidate | s < threshold) + fn_weight * P(missed | s >= threshold), the
    probabilities integrated over s. Gauss-Legendre with num_perm / 2 + 1 nodes integrates these
    polynomials (degree b * r) exactly, all pairs in one numpy step."""
    b = np.concatenate([np.full(num_perm // bands, bands) for bands in range(1, num_perm + 1)])
    r = np.concatenate([np.arange(1, num_perm // bands + 1) for bands in range(1, num_perm + 1)])
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def integral(lo: float, hi: float, f) -> np.ndarray:
        s = (hi - lo) / 2 * x + (hi + lo) / 2
        return f(s[None, :]) @ w * (hi - lo) / 2

    collide = lambda s: 1 - (1 - s ** r[:, None]) ** b[:, None]
    fp = integral(0.0, threshold, collide)
    fn = integral(threshold, 1.0, lambda s: 1 - collide(s))
    best = int(np.argmin(weights[0] * fp + weights[1] * fn))  # first minimum, as datasketch's loop
    return int(b[best]), int(r[best])


def collision_probability(s: np.ndarray | float, bands: int, rows: int) -> np.ndarray | float:
    """Probability that two documents of Jaccard similarity s share at least one LSH bucket."""
    return 1 - (1 - np.asarray(s, dtype=np.float64) ** rows) ** bands


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: a hash of each band's `rows` signature values, seeded by the band's
    number, so equal keys mean the same band agrees (bar a 2^-64 collision) and keys of all bands
    can share one table."""
    keys = np.empty((len(sigs), bands), dtype=np.uint64)
    for j in range(bands):
        h = np.full(len(sigs), fmix64(np.array([j + 1], dtype=np.uint64))[0])
        for v in sigs[:, j * rows:(j + 1) * rows].T:
            h ^= v
            h *= M64
        keys[:, j] = fmix64(h)
    return keys


def bucket_pairs(keys: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Candidate pairs (m, 2) uint64 from (key, doc) records: in every bucket (records of equal
    key) each document paired with the bucket's smallest; unique, sorted. A star per bucket
    connects the bucket in the graph with size - 1 edges instead of size^2 / 2.

    Sorts keys and docs in place (by key). Memory: the records, an argsort index and one
    reordered copy at a time, 32 bytes a record."""
    order = np.argsort(keys)
    keys[:] = keys[order]
    docs[:] = docs[order]
    del order
    same = keys[1:] == keys[:-1]
    # Only records in buckets of two or more matter; they are few, so work on them alone.
    member = np.zeros(len(keys), dtype=bool)
    member[1:] = same
    member[:-1] |= same
    keys, docs = keys[member], docs[member]
    if not len(keys):
        return np.zeros((0, 2), dtype=np.uint64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    smallest = np.repeat(np.minimum.reduceat(docs, starts), sizes)
    pairs = np.stack([smallest, docs], axis=1)[docs != smallest]
    return np.unique(pairs, axis=0)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """The fraction of equal signature values, row by row: MinHash's Jaccard estimate."""
    return (sig_a == sig_b).mean(axis=1)


def _neighbourhoods(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The records (node, nbr) sorted by node then nbr, repeats dropped, and where each node's run
    starts: its first record holds its smallest neighbour."""
    order = np.lexsort((nbr, node))
    node, nbr = node[order], nbr[order]
    del order
    keep = np.ones(len(node), dtype=bool)
    keep[1:] = (node[1:] != node[:-1]) | (nbr[1:] != nbr[:-1])
    node, nbr = node[keep], nbr[keep]
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]]) if len(node) else np.zeros(0, dtype=np.int64)
    return node, nbr, starts


def large_star(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One large-star step of the alternating connected-components algorithm (Kiveris et al.,
    "Connected Components in MapReduce and Beyond", 2014) over the records of some nodes, each
    edge given once from each end (node, nbr): every node's larger neighbours are re-attached to
    the smallest of the node and its neighbours. Returns the new edges (v, m), v > m, and how many
    of them differ from the edge they replace (0 everywhere: the step changed nothing)."""
    node, nbr, starts = _neighbourhoods(node, nbr)
    smallest = np.repeat(np.minimum(node[starts], nbr[starts]), np.diff(np.r_[starts, len(node)]))
    larger = nbr > node
    changed = int(np.count_nonzero(larger & (smallest != node)))
    return nbr[larger], smallest[larger], changed


def small_star(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One small-star step over the records of some nodes, each edge given once, from its larger
    end (node > nbr): a node and its smaller neighbours are all attached to the smallest of them.
    Returns the new edges (v, m), v > m, and how many nodes had two or more smaller neighbours
    (0 everywhere: the step changed nothing)."""
    node, nbr, starts = _neighbourhoods(node, nbr)
    sizes = np.diff(np.r_[starts, len(node)])
    smallest = np.repeat(nbr[starts], sizes)
    moved = nbr != smallest
    return (np.concatenate([nbr[moved], node[starts]]), np.concatenate([smallest[moved], nbr[starts]]),
            int(np.count_nonzero(sizes > 1)))


def choose_survivors(groups: dict[str, np.ndarray], ids: pa.Array, quality: pa.Array) -> np.ndarray:
    """For each row, the row that survives its group (rows with equal `groups` columns): the
    highest quality (nulls lowest), then the smallest id. Deterministic whatever the row order."""
    n = len(ids)
    table = pa.table({**groups, "quality": quality, "id": ids, "row": np.arange(n)})
    table = table.sort_by([(g, "ascending") for g in groups] + [("quality", "descending"), ("id", "ascending")])
    rows = table["row"].to_numpy()
    first = np.zeros(n, dtype=bool)
    first[:1] = True
    for g in groups:
        col = table[g].to_numpy()
        first[1:] |= col[1:] != col[:-1]
    survivor = np.empty(n, dtype=np.int64)
    survivor[rows] = rows[np.flatnonzero(first)][np.cumsum(first) - 1]
    return survivor
