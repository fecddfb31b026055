"""Duplicate detection, the pure parts: text digests, MinHash signatures, LSH bands, candidate
pairs, connected components and the survivor rule. No files and no Ray here:
dataprep/dedup_stages.py runs these as tasks over files.

Signatures follow datasketch's "affine32" scheme value for value: each shingle's 32-bit hash is
pre-mixed by the MurmurHash3 finalizer, permuted by a_k * h + b_k mod 2^32 with datasketch's
(a_k, b_k) for the seed, and the minimum kept. So a signature equals that of
`datasketch.MinHash(num_perm, seed, hashfunc=f)` updated with the same shingles, where f is the
shingle hash: "sha1" is MinHash's default (SHA-1 of the n-gram's UTF-8 bytes: the values equal a
default MinHash's), "wordhash" (the default here) hashes each distinct word once and combines the
n words' hashes in numpy, which is what makes signing several times faster than datasketch: with
SHA-1, hashing the n-gram strings alone takes longer than all the rest.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from operator import methodcaller
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
from datasketch import MinHash
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as _components

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
_M64 = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection mod 2^64
_C64 = np.uint64(0xD6E8FEB86659FD93)


def normalize(text: str) -> str:
    return _WS.sub(" ", text.casefold()).strip()


def text_digests(texts: Sequence[str]) -> np.ndarray:
    """128-bit BLAKE2b of each normalized text, as (n, 2) uint64: equal rows = exact duplicates."""
    raw = b"".join(hashlib.blake2b(normalize(t).encode("utf-8"), digest_size=16).digest() for t in texts)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2)


def shingles(text: str, n: int) -> Iterator[bytes]:
    """Word n-grams of the case-folded text, joined by one space, UTF-8 (repeats included: MinHash
    ignores them). A text of fewer than n words is one shingle, so every text has a signature."""
    words = _WORD.findall(text.casefold())
    if len(words) < n:
        return iter([" ".join(words).encode("utf-8")])
    # map/zip keep the per-shingle work in C: this loop is the hot path of signing.
    return map(str.encode, map(" ".join, zip(*(words[i:] for i in range(n)))))


def _rolling(w: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of each window of n consecutive word hashes: h = (..(C*M + w0)*M + w1..)
    mod 2^64, C and M odd constants (C so that leading zeros change the hash)."""
    m = len(w) - n + 1
    h = np.full(max(m, 0), _C64)
    for k in range(n):
        h *= _M64
        h += w[k:k + m]
    return h


@cache
def _word_chars() -> np.ndarray:
    """A table over all code points: True where the character matches the regex \\w."""
    every = "".join(map(chr, range(0x110000)))
    kept = re.sub(r"\W", "\x00", every).encode("utf-32-le", "surrogatepass")
    return np.frombuffer(kept, dtype=np.uint32) != 0


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of each word (maximal run of \\w characters) of the case-folded texts, and
    the number of words of each text: the words of re.findall(r"\\w+", text.casefold()), found
    and hashed in numpy over code points rather than by the regex engine (3x faster).
    A word's hash is the sum mod 2^64 of fmix64(code point | position in word << 32)."""
    folded = [t.casefold() for t in texts]
    text_ends = np.cumsum([len(f) + 1 for f in folded])
    # One space between texts: a non-word character, so no word spans two texts.
    cp = np.frombuffer(" ".join(folded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    is_word = _word_chars()[cp]
    edges = np.diff(is_word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    counts = np.diff(np.searchsorted(starts, text_ends), prepend=0)
    if not len(starts):
        return np.zeros(0, dtype=np.uint64), counts
    # Each character's offset in its word (meaningless outside words, which are zeroed).
    word_of = np.cumsum(edges[:-1] == 1) - 1
    offset = np.arange(len(cp), dtype=np.uint64) - starts[np.maximum(word_of, 0)].astype(np.uint64)
    mixed = fmix64(cp.astype(np.uint64) | (offset << np.uint64(32)))
    mixed[~is_word] = 0
    total = np.zeros(len(cp) + 1, dtype=np.uint64)
    np.cumsum(mixed, out=total[1:])  # wraps mod 2^64, so differences are exact sums
    return total[ends] - total[starts], counts


def wordhash_shingles(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashfunc "wordhash": a 32-bit hash of each word n-gram of each text, built from the words'
    hashes in numpy (no string per n-gram), and the number of n-grams of each text. The n-grams
    are those of `shingles`; a text of fewer than n words is one n-gram of all its words.
    A n-gram's hash is fmix64(rolling hash of its word hashes) >> 32."""
    w, lengths = word_hashes(texts)
    counts = np.maximum(lengths - n + 1, 1)
    ends = np.cumsum(lengths)
    # Windows over the whole batch at once; drop those that start in the last n - 1 words of a
    # text (they run into the next text).
    windows = _rolling(w, n)
    crossing = (ends[:, None] - np.arange(1, n)).ravel()
    valid = np.ones(len(windows), dtype=bool)
    valid[crossing[(crossing >= 0) & (crossing < len(windows))]] = False
    long = lengths >= n
    hashes = np.empty(int(counts.sum()), dtype=np.uint64)
    hashes[np.repeat(long, counts)] = windows[valid]
    first = np.cumsum(counts) - counts
    for i in np.flatnonzero(~long):  # rare: texts shorter than one n-gram
        hashes[first[i]] = _rolling(w[ends[i] - lengths[i]:ends[i]], int(lengths[i]))[0]
    return (fmix64(hashes) >> np.uint64(32)).astype(np.uint32), counts


_digest = methodcaller("digest")


def _digest_sha1_32(items: Iterator[bytes]) -> np.ndarray:
    # datasketch.hashfunc.sha1_hash32: the first 4 bytes of SHA-1, little-endian.
    return np.frombuffer(b"".join(map(_digest, map(hashlib.sha1, items))), dtype="<u4")[::5]


def sha1_shingles(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashfunc "sha1": datasketch's default hash of each shingle's UTF-8 bytes, and the number of
    shingles of each text. Five times slower than "wordhash": SHA-1 per n-gram dominates."""
    per_text = [_digest_sha1_32(shingles(t, n)) for t in texts]
    counts = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
    return np.concatenate(per_text).astype(np.uint32), counts


SHINGLE_HASHES = {"wordhash": wordhash_shingles, "sha1": sha1_shingles}


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch pre-mixes every input hash with it)."""
    h = h ^ (h >> 16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> 13
    h *= np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


class MinHasher:
    """MinHash signatures of word n-gram shingles, datasketch "affine32" values, vectorized."""

    # At most this many shingles are permuted per numpy step (8192 x 128 uint32 = 4 MiB), so a
    # very long text does not need a huge temporary.
    BLOCK = 8192

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
        if not len(texts):
            return out
        hashes, counts = self._shingle_hashes(texts, self.ngram)
        hashed = fmix32(hashes)
        ends = np.cumsum(counts).tolist()
        # One reused buffer: a fresh large array per text costs page faults.
        buffer = np.empty((min(self.BLOCK, max(counts)), self.num_perm), dtype=np.uint32)
        # One text at a time: min(axis=0) over a text's rows is numpy's fast path (np.minimum.reduceat
        # over many texts at once measured 3x slower).
        for i, (start, end) in enumerate(zip([0] + ends[:-1], ends)):
            for lo in range(start, end, self.BLOCK):
                block = hashed[lo:min(lo + self.BLOCK, end), None]
                permuted = buffer[:len(block)]
                np.multiply(block, self._a, out=permuted)  # uint32: wraps mod 2^32, as datasketch
                permuted += self._b
                np.minimum(out[i], permuted.min(axis=0), out=out[i])
        return out


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
            h *= _M64
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


def connected_components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nodes of the edges (a[i], b[i]), sorted, and a component label for each."""
    nodes = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (ia, ib)), shape=(len(nodes), len(nodes)))
    _, labels = _components(graph, directed=False)
    return nodes, labels


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
