"""Validation documents held out of training, per mixture source, before the mixture repeats any.

Which documents: a source's documents ranked by a seeded hash of their id (`id_hashes`); the
first max(min_documents, ceil(fraction x documents)) of them (`choose`), fewer when their tokens
reach max_tokens, and never every document of the source. A hash of the id, not a position, so
the choice does not depend on the order of files or documents, and the same document ranks the
same in every source that has it.

The held-out text must not reach training by another way either: under another id (a near
duplicate the dedup let through), or in another source (a page both crawled and in a curated
set). So every training document of every source is checked for a span of `overlap_tokens`
tokens that a held-out document also has (`span_hashes`, `overlapping_rows`), and is left out of
training when it has one. The check holds 8 bytes per held-out token (the spans' hashes, sorted)
and reads every training token once.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable

import numpy as np

from dataprep.config import ValidationConfig
from dataprep.shards import IndexedShard

# Rabin-Karp over 64-bit words: an odd base is invertible mod 2^64, so a span's hash is the
# difference of two prefix sums times the inverse of the base's power at its start.
_BASE = 0x9E3779B97F4A7C15
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
CHUNK_TOKENS = 1 << 20  # tokens of consecutive documents hashed in one vectorized call


def id_hashes(ids: Iterable[str], seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each document id (blake2b), as uint64."""
    key = f"{seed}/".encode()
    return np.fromiter((int.from_bytes(hashlib.blake2b(key + str(i).encode(), digest_size=8).digest(), "little")
                        for i in ids), dtype=np.uint64)


def choose(hashes: np.ndarray, lengths: np.ndarray, v: ValidationConfig) -> np.ndarray:
    """The held-out documents of one source (numbers into `hashes` / `lengths`), in hash order:
    the first max(min_documents, ceil(fraction x n)) by hash, cut where the tokens before a
    document reach max_tokens, and at most n - 1 (a source keeps a training document)."""
    n = len(hashes)
    if not v.enabled or n < 2:
        return np.zeros(0, dtype=np.int64)
    k = min(n - 1, max(v.min_documents, math.ceil(v.fraction * n)))
    first = np.argpartition(hashes, k - 1)[:k] if k < n else np.arange(n)
    first = first[np.argsort(hashes[first], kind="stable")].astype(np.int64)
    before = np.cumsum(lengths[first]) - lengths[first]  # tokens held out before each document
    return first[before < v.max_tokens]


def _powers(base: int, n: int) -> np.ndarray:
    p = np.full(n, base, dtype=np.uint64)
    p[0] = 1
    return np.cumprod(p, dtype=np.uint64)  # wraps mod 2^64, as intended


def span_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of each run of n consecutive tokens: len(tokens) - n + 1 of them (none when
    shorter), the i-th for tokens[i:i + n]."""
    m = len(tokens) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    t = np.asarray(tokens).astype(np.uint64) + np.uint64(1)
    prefix = np.zeros(len(t) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumsum(t * _powers(_BASE, len(t)), dtype=np.uint64, out=prefix[1:])
        return (prefix[n:] - prefix[:m]) * _powers(_BASE_INVERSE, m)


def contains(sorted_set: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of `values` are in `sorted_set` (sorted, unique; a memory map is fine)."""
    if not len(sorted_set) or not len(values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return np.asarray(sorted_set[at]) == values


def overlapping_rows(shard: IndexedShard, spans: np.ndarray, n: int, skip: Iterable[int] = ()) -> list[int]:
    """The documents (rows) of a tokenized file with a run of n tokens whose hash is in `spans`,
    except those in `skip` (the held-out documents themselves). Consecutive documents are hashed
    together, CHUNK_TOKENS at a time; a run that crosses from one document into the next is not
    one of either's."""
    skip, found = set(skip), []
    sizes = shard.sizes.astype(np.int64)
    first = 0
    while first < len(sizes):
        last = first + max(1, int(np.searchsorted(np.cumsum(sizes[first:]), CHUNK_TOKENS, side="right")))
        starts = np.concatenate([[0], np.cumsum(sizes[first:last])])
        offset = int(shard.pointers[first]) // shard.dtype.itemsize
        hashes = span_hashes(shard.tokens[offset:offset + int(starts[-1])], n)
        doc = np.searchsorted(starts, np.arange(len(hashes)), side="right") - 1
        inside = np.arange(len(hashes)) + n <= starts[doc + 1]
        hits = np.unique(doc[inside & contains(spans, hashes)]) + first
        found.extend(int(r) for r in hits if int(r) not in skip)
        first = last
    return found
