"""Word n-gram shingles and their 32-bit hashes, the input of MinHash (dataprep/dedup.py), two
ways: "sha1" is datasketch MinHash's default (SHA-1 of the n-gram's UTF-8 bytes: signatures equal a
default MinHash's); "wordhash" (the default here) hashes each distinct word once and combines the n
words' hashes in numpy, which is what makes signing several times faster than datasketch: with
SHA-1, hashing the n-gram strings alone takes longer than all the rest."""

from __future__ import annotations

import hashlib
import re
from functools import cache
from operator import methodcaller
from typing import Iterator, Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
M64 = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection mod 2^64
_C64 = np.uint64(0xD6E8FEB86659FD93)


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
    m = max(len(w) - n + 1, 0)  # no window in fewer than n words (w[k:k + m] must stay empty)
    h = np.full(m, _C64)
    for k in range(n):
        h *= M64
        h += w[k:k + m]
    return h


def _text_windows(w: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """_rolling over the words `w` of several texts (text i's words end at ends[i]), keeping only
    the windows inside one text: those starting in a text's last n - 1 words run into the next."""
    windows = _rolling(w, n)
    crossing = (ends[:, None] - np.arange(1, n)).ravel()
    valid = np.ones(len(windows), dtype=bool)
    valid[crossing[(crossing >= 0) & (crossing < len(windows))]] = False
    return windows[valid]


def word_ngrams64(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of each word n-gram of each text, text after text (fmix64 of the rolling hash
    of its words' hashes; the words of word_hashes), and the number of n-grams of each text: a
    text of fewer than n words has none."""
    w, lengths = word_hashes(texts)
    return fmix64(_text_windows(w, np.cumsum(lengths), n)), np.maximum(lengths - n + 1, 0)


# In the table of _casefolded_chars: a character that casefolds to several (ß -> ss, and 103 more).
_EXPANDS = np.uint32(0xFFFFFFFF)


@cache
def _casefolded_chars() -> np.ndarray:
    """A table over all code points: the character's casefold where that is one character that
    matches the regex \\w, 0 where it is one non-word character, _EXPANDS where it is several.
    Casefolding maps each character on its own, so while no character expands, the table applied
    to a text's code points gives those of text.casefold(), word characters nonzero."""
    table = np.empty(0x110000, dtype=np.uint32)
    for lo in range(0, len(table), 0x10000):  # a plane at a time: one string per code point is big
        folds = [chr(c).casefold() for c in range(lo, lo + 0x10000)]
        single = "".join(f if len(f) == 1 else "\x00" for f in folds)
        kept = re.sub(r"\W", "\x00", single).encode("utf-32-le", "surrogatepass")
        plane = table[lo:lo + 0x10000]
        plane[:] = np.frombuffer(kept, dtype=np.uint32)
        plane[[i for i, f in enumerate(folds) if len(f) > 1]] = _EXPANDS
    return table


def _casefolded_code_points(texts: Sequence[str]) -> np.ndarray:
    """The texts' code points through _casefolded_chars, one space between texts (a non-word
    character, so no word spans two texts)."""
    joined = " ".join(texts).encode("utf-32-le", "surrogatepass")
    return np.take(_casefolded_chars(), np.frombuffer(joined, dtype=np.uint32))


def word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of each word (maximal run of \\w characters) of the case-folded texts, and
    the number of words of each text: the words of re.findall(r"\\w+", text.casefold()), found
    and hashed in numpy over code points rather than by the regex engine (3x faster).
    A word's hash is the sum mod 2^64 of fmix64(code point | position in word << 32)."""
    cp = _casefolded_code_points(texts)
    if cp.max(initial=0) == _EXPANDS:  # rare: Python casefolds these texts (it lengthens them)
        texts = [t.casefold() for t in texts]
        cp = _casefolded_code_points(texts)  # casefolding is idempotent: nothing expands now
    text_ends = np.cumsum([len(t) + 1 for t in texts])
    edges = np.diff((cp != 0).view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    counts = np.diff(np.searchsorted(starts, text_ends), prepend=0)
    if not len(starts):
        return np.zeros(0, dtype=np.uint64), counts
    # Each character's position in its word: a running count of characters, set back to 0 at
    # each word's start. Outside words it runs on: no sum below covers those characters.
    position = np.ones(len(cp), dtype=np.int64)
    position[0] = 0
    position[starts] -= np.diff(starts, prepend=0)
    key = np.cumsum(position, out=position).view(np.uint64)
    key <<= np.uint64(32)
    key |= cp
    total = np.zeros(len(cp) + 1, dtype=np.uint64)
    np.cumsum(fmix64(key), out=total[1:])  # wraps mod 2^64, so differences are exact sums
    return total[ends] - total[starts], counts


def wordhash_shingles(texts: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashfunc "wordhash": a 32-bit hash of each word n-gram of each text, built from the words'
    hashes in numpy (no string per n-gram), and the number of n-grams of each text. The n-grams
    are those of `shingles`; a text of fewer than n words is one n-gram of all its words.
    A n-gram's hash is fmix64(rolling hash of its word hashes) >> 32."""
    w, lengths = word_hashes(texts)
    counts = np.maximum(lengths - n + 1, 1)
    ends = np.cumsum(lengths)
    long = lengths >= n
    hashes = np.empty(int(counts.sum()), dtype=np.uint64)
    hashes[np.repeat(long, counts)] = _text_windows(w, ends, n)
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
