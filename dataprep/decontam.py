"""Decontamination (GPT-3, appendix C): a training document that shares a word n-gram (13 words by
default) with an evaluation set is dropped, or flagged.

Words are normalized before they are compared: a text's words are the maximal runs of word
characters (Unicode letters, digits, `_`) of its case-folded text (dataprep/shingling.py:
word_hashes), so case and punctuation are gone: "Well-known, isn't it?" is `well known isn t it`,
as WikiText's tokenized "well @-@ known , isn 't it ?" is. An n-gram is n consecutive words of one
text, never across two; an evaluation example of fewer than n words has none, so short common
phrases never match. A set whose text replaced rare words by a placeholder (WikiText's `<unk>`)
names it: no n-gram of the set spans one, since the words it stands for are unknown (otherwise a
run of 13 `<unk>` would match any other WikiText article's).

The index of an evaluation suite is every distinct (n-gram hash, set, example) of its examples: a
sorted array of 64-bit hashes and, row for row, the set and the example each came from, 14 bytes a
row. It is built once in the driver and shared through the Ray object store (numpy arrays are
mapped, not copied, by the tasks of a node); a document's n-grams are looked up by binary search.
With 64-bit hashes a false match is rare: at 10^6 indexed n-grams and 10^12 n-grams of a crawl,
about 0.05 expected in all (10^18 / 2^64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from dataprep.shingling import word_ngrams64

SET_DTYPE = np.uint16
EXAMPLE_DTYPE = np.uint32


@dataclass
class EvalIndex:
    """The n-grams of the evaluation sets: `hashes` sorted, and for each row the number of its set
    (in `names`) and of its example within that set."""

    n: int
    names: list[str]
    hashes: np.ndarray  # uint64, sorted
    sets: np.ndarray  # SET_DTYPE
    examples: np.ndarray  # EXAMPLE_DTYPE

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.sets.nbytes + self.examples.nbytes

    def matches(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (text, set, example) such that text `texts[i]` shares an n-gram with that example
        of that set, as three arrays (repeats included: one row per shared n-gram)."""
        h, counts = word_ngrams64(texts, self.n)
        if not len(h) or not len(self.hashes):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        lo = np.searchsorted(self.hashes, h, side="left")
        hit = self.hashes[np.minimum(lo, len(self.hashes) - 1)] == h
        text_of = np.repeat(np.arange(len(texts)), counts)[hit]
        lo = lo[hit]
        hi = np.searchsorted(self.hashes, h[hit], side="right")
        # The rows lo[i]..hi[i] of each hit (an n-gram of several examples has several rows).
        width = hi - lo
        rows = np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width) + np.repeat(lo, width)
        return np.repeat(text_of, width), self.sets[rows].astype(np.int64), self.examples[rows].astype(np.int64)


def build_index(sets: dict[str, Iterable[str]], n: int, placeholders: dict[str, str] | None = None,
                batch: int = 1024) -> tuple[EvalIndex, dict[str, dict]]:
    """The index of the examples (texts) of each named set, and per set: examples, those long
    enough to have an n-gram, distinct n-grams. placeholders: set -> a token that stands for a
    word the set removed (WikiText's `<unk>`): no n-gram spans it, so a run of them matches
    nothing (the text it replaced is unknown)."""
    if len(sets) > np.iinfo(SET_DTYPE).max:
        raise ValueError(f"at most {np.iinfo(SET_DTYPE).max} evaluation sets")
    placeholders = placeholders or {}
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    info: dict[str, dict] = {}
    for set_no, (name, texts) in enumerate(sets.items()):
        placeholder = placeholders.get(name)
        examples = indexed = 0
        set_hashes = []
        pieces: list[str] = []  # the pending examples' texts, cut at the placeholder
        owners: list[int] = []  # the example of each piece

        def flush() -> None:
            nonlocal indexed
            h, counts = word_ngrams64(pieces, n)
            numbers = np.repeat(np.asarray(owners, dtype=EXAMPLE_DTYPE), counts)
            set_hashes.append(h)
            parts.append((h, np.full(len(h), set_no, dtype=SET_DTYPE), numbers))
            indexed += len(np.unique(numbers))
            pieces.clear()
            owners.clear()

        for text in texts:
            cut = text.split(placeholder) if placeholder else [text]
            pieces += cut
            owners += [examples] * len(cut)
            examples += 1
            if len(pieces) >= batch:
                flush()
        flush()
        if examples > np.iinfo(EXAMPLE_DTYPE).max:
            raise ValueError(f"evaluation set {name}: more than {np.iinfo(EXAMPLE_DTYPE).max} examples")
        info[name] = {"examples": examples, "indexed_examples": indexed,
                      "ngrams": int(len(np.unique(np.concatenate(set_hashes))))}
    hashes, set_nos, numbers = (np.concatenate([p[i] for p in parts]) for i in range(3))
    order = np.lexsort((numbers, set_nos, hashes))
    hashes, set_nos, numbers = hashes[order], set_nos[order], numbers[order]
    distinct = np.ones(len(hashes), dtype=bool)  # an n-gram repeated within one example: one row
    distinct[1:] = (hashes[1:] != hashes[:-1]) | (set_nos[1:] != set_nos[:-1]) | (numbers[1:] != numbers[:-1])
    index = EvalIndex(n, list(sets), hashes[distinct], set_nos[distinct], numbers[distinct])
    return index, info
