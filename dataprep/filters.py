"""Document filters: each returns None to keep a document or the reason to drop it.

A filter may also clean the text it keeps (the C4 rules remove lines, as C4 did). Drop reasons
are data: the pipeline counts them per reason, so every rule's effect on a corpus is a number.

- `length_filter`: empty or too short (characters, words).
- `gopher_quality_filter`: Gopher's quality rules (Rae et al. 2021, appendix A.1.1): word count,
  mean word length, symbol-to-word ratio, bullet / ellipsis line shares, alphabetic words,
  stop words.
- `gopher_repetition_filter`: Gopher's repetition rules (table A1): duplicate lines and
  paragraphs (share of them and of their characters), the top 2-4-gram's character share and
  the character share of duplicated 5-10-grams.
- `c4_filter`: C4's rules (Raffel et al. 2020, section 2.2): keep only lines that end in
  terminal punctuation and have enough words, remove javascript and policy / cookie lines;
  drop pages with "lorem ipsum", a curly brace, or too few sentences.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Optional

import numpy as np

Filter = Callable[[dict], Optional[str]]

WORD = re.compile(r"\S+")
ALPHA = re.compile(r"[^\W\d_]")
PUNCT_ONLY = re.compile(r"^[^\w\s]+$")
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "–", "-", "*", "·", "►", "▶", "➢", "✓", "✔", "◦", "‣", "⁃")
ELLIPSES = ("...", "…")
PARAGRAPHS = re.compile(r"\n\s*\n")
SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
C4_END_MARKS = (".", "?", "!", '"')
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
             "use cookies")


def length_filter(min_chars: int, min_words: int) -> Filter:
    def check(doc: dict) -> Optional[str]:
        text = doc["text"]
        if not text.strip():
            return "empty"
        if len(text) < min_chars or len(text.split()) < min_words:
            return "too_short"
        return None

    return check


# --- Gopher quality ---------------------------------------------------------------------------------

def gopher_quality_filter(min_words: int = 50, max_words: int = 100_000, min_mean_word_length: float = 3,
                          max_mean_word_length: float = 10, max_symbol_word_ratio: float = 0.1,
                          max_bullet_lines_ratio: float = 0.9, max_ellipsis_lines_ratio: float = 0.3,
                          min_alpha_words_ratio: float = 0.8, min_stop_words: int = 2,
                          stop_words: Iterable[str] = ("the", "be", "to", "of", "and", "that", "have", "with"),
                          **_) -> Filter:
    stops = frozenset(w.lower() for w in stop_words)

    def check(doc: dict) -> Optional[str]:
        text = doc["text"]
        tokens = WORD.findall(text)
        words = [t for t in tokens if not PUNCT_ONLY.match(t)]  # symbols are not words
        n = len(words)
        if n < min_words or n > max_words:
            return "gopher_word_count"
        mean = sum(len(w) for w in words) / n
        if mean < min_mean_word_length or mean > max_mean_word_length:
            return "gopher_mean_word_length"
        symbols = text.count("#") + text.count("...") + text.count("…")
        if symbols / n > max_symbol_word_ratio:
            return "gopher_symbol_ratio"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            if sum(line.startswith(BULLETS) for line in lines) / len(lines) > max_bullet_lines_ratio:
                return "gopher_bullet_lines"
            if sum(line.endswith(ELLIPSES) for line in lines) / len(lines) > max_ellipsis_lines_ratio:
                return "gopher_ellipsis_lines"
        if sum(1 for w in words if ALPHA.search(w)) / n < min_alpha_words_ratio:
            return "gopher_alpha_words"
        found = 0
        for w in words:
            if w.lower().strip(".,;:!?\"'()[]") in stops:
                found += 1
                if found >= min_stop_words:
                    return None
        return "gopher_stop_words"

    return check


# --- Gopher repetition -----------------------------------------------------------------------------

def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier one, their characters)."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


class WordNgrams:
    """A text's words as ids, with each word's length, for the n-gram repetition rules: n-grams
    are 64-bit rolling hashes of word ids (collisions are negligible at document sizes), so every
    n costs a few numpy passes rather than a Python loop over tuples."""

    def __init__(self, words: list[str]):
        vocab: dict[str, int] = {}
        self.ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.uint64, count=len(words))
        self.lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        self.total = int(self.lengths.sum())
        self._hash, self._n = self.ids.copy(), 1

    def grams(self, n: int) -> np.ndarray:
        """Hash of the n-gram starting at each position (len(words) - n + 1 of them)."""
        if n < self._n:
            self._hash, self._n = self.ids.copy(), 1
        with np.errstate(over="ignore"):
            while self._n < n:
                self._hash = self._hash[:-1] * np.uint64(0x9E3779B97F4A7C15) + self.ids[self._n:] + np.uint64(1)
                self._n += 1
        return self._hash

    def counts(self, n: int) -> np.ndarray:
        """How often the n-gram at each position occurs in the text."""
        _, inverse, counts = np.unique(self.grams(n), return_inverse=True, return_counts=True)
        return counts[inverse]


def top_ngram_char_fraction(words: list[str] | WordNgrams, n: int) -> float:
    """Characters (of words) covered by the most frequent n-gram's occurrences / all word characters."""
    w = words if isinstance(words, WordNgrams) else WordNgrams(words)
    if len(w.ids) < n or not w.total:
        return 0.0
    counts = w.counts(n)
    i = int(np.argmax(counts))
    if counts[i] < 2:
        return 0.0
    return float(w.lengths[i:i + n].sum() * counts[i] / w.total)


def dup_ngram_char_fraction(words: list[str] | WordNgrams, n: int) -> float:
    """Characters of words inside any n-gram that occurs more than once / all word characters
    (each character counted once, however many duplicated n-grams cover it)."""
    w = words if isinstance(words, WordNgrams) else WordNgrams(words)
    if len(w.ids) < n or not w.total:
        return 0.0
    starts = np.flatnonzero(w.counts(n) > 1)
    if not len(starts):
        return 0.0
    edges = np.zeros(len(w.ids) + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + n, -1)
    covered = np.cumsum(edges[:-1]) > 0
    return float(w.lengths[covered].sum() / w.total)


def gopher_repetition_filter(max_dup_line_frac: float = 0.3, max_dup_para_frac: float = 0.3,
                             max_dup_line_char_frac: float = 0.2, max_dup_para_char_frac: float = 0.2,
                             top_ngram_max_frac: Optional[dict] = None,
                             dup_ngram_max_frac: Optional[dict] = None, **_) -> Filter:
    top = {int(k): float(v) for k, v in (top_ngram_max_frac or {2: 0.2, 3: 0.18, 4: 0.16}).items()}
    dup = {int(k): float(v) for k, v in (dup_ngram_max_frac or {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12,
                                                                 9: 0.11, 10: 0.10}).items()}

    def check(doc: dict) -> Optional[str]:
        text = doc["text"]
        size = max(len(text), 1)
        paras = [p.strip() for p in PARAGRAPHS.split(text) if p.strip()]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for parts, max_frac, max_char_frac, what in (
            (paras, max_dup_para_frac, max_dup_para_char_frac, "paragraph"),
            (lines, max_dup_line_frac, max_dup_line_char_frac, "line"),
        ):
            if parts:
                n, chars = _duplicates(parts)
                if n / len(parts) > max_frac:
                    return f"gopher_dup_{what}s"
                if chars / size > max_char_frac:
                    return f"gopher_dup_{what}_chars"
        words = WordNgrams(text.lower().split())
        for n, limit in sorted(top.items()):
            if top_ngram_char_fraction(words, n) > limit:
                return f"gopher_top_{n}gram"
        for n, limit in sorted(dup.items()):
            if dup_ngram_char_fraction(words, n) > limit:
                return f"gopher_dup_{n}gram"
        return None

    return check


# --- C4 -------------------------------------------------------------------------------------------

def c4_filter(remove_no_terminal_punct_lines: bool = True, min_words_per_line: int = 5,
              max_word_length: int = 1000, remove_javascript_lines: bool = True,
              remove_policy_lines: bool = True, drop_lorem_ipsum: bool = True,
              drop_curly_braces: bool = True, min_sentences: int = 3, **_) -> Filter:
    """C4's rules. Line rules clean the text of a kept document (as C4 did); page rules drop it."""

    def keep_line(line: str) -> bool:
        words = line.split()
        if not words:
            return False
        if remove_no_terminal_punct_lines and (not line.endswith(C4_END_MARKS) or line.endswith(ELLIPSES)):
            return False
        if len(words) < min_words_per_line:
            return False
        if max(len(w) for w in words) > max_word_length:
            return False
        low = line.lower()
        if remove_javascript_lines and "javascript" in low:
            return False
        if remove_policy_lines and any(p in low for p in C4_POLICY):
            return False
        return True

    def check(doc: dict) -> Optional[str]:
        low = doc["text"].lower()
        if drop_lorem_ipsum and "lorem ipsum" in low:
            return "c4_lorem_ipsum"
        if drop_curly_braces and "{" in low:
            return "c4_curly_braces"
        lines = [line.strip() for line in doc["text"].splitlines()]
        text = "\n".join(line for line in lines if keep_line(line))
        if len(SENTENCE_END.findall(text)) < min_sentences:
            return "c4_too_few_sentences"
        doc["text"] = text
        return None

    return check


def first_failure(doc: dict, checks: Iterable[Filter]) -> Optional[str]:
    for check in checks:
        reason = check(doc)
        if reason:
            return reason
    return None
