"""Bytes to text (charset handling) and HTML to main-content text with Resiliparse (see README:
chosen over trafilatura for speed)."""

from __future__ import annotations

import codecs
import re
from typing import Optional

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree

META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
UTF8_NAMES = {"utf-8", "utf8", "ascii", "us-ascii"}

# How a payload was decoded; every case but "ok" is counted in the extract stage's stats.
OK, MISLABELLED, DETECTED, INVALID = "ok", "charset_mislabelled", "charset_detected", "invalid_encoding"


def declared_charset(payload: bytes, charset: Optional[str]) -> Optional[str]:
    """The HTTP charset, else a <meta> charset, as a Python codec name (None when unknown)."""
    for label in (charset, _meta_charset(payload)):
        if label:
            try:
                return codecs.lookup(label.strip().strip("\"'")).name
            except LookupError:
                continue
    return None


def _meta_charset(payload: bytes) -> Optional[str]:
    m = META_CHARSET.search(payload[:4096])
    return m.group(1).decode("ascii") if m else None


def decode(payload: bytes, charset: Optional[str]) -> str:
    return decode_with_status(payload, charset)[0]


def decode_with_status(payload: bytes, charset: Optional[str]) -> tuple[str, str]:
    """Bytes to text, and how: valid UTF-8 wins over a declared single-byte charset (which
    decodes anything, so a mislabel would pass silently); then the declared charset; then a
    detected one; if none decodes cleanly, the detected one with replacement characters."""
    declared = declared_charset(payload, charset)
    try:
        text = payload.decode("utf-8")
        status = OK if declared in (None, "utf-8", "ascii") or payload.isascii() else MISLABELLED
        return text.removeprefix("\ufeff"), status
    except UnicodeDecodeError:
        pass
    if declared and declared not in ("utf-8", "ascii"):
        try:
            return payload.decode(declared), OK
        except (UnicodeDecodeError, LookupError):
            pass
    detected = detect_encoding(payload)
    try:
        text, status = payload.decode(detected), (MISLABELLED if declared else DETECTED)
    except (UnicodeDecodeError, LookupError):
        text, status = bytes_to_str(payload, detected, errors="replace"), INVALID
    return text.removeprefix("\ufeff"), status


# Main-content options, measured on the article-extraction-benchmark (bench/bench_extract.py):
# main_content alone scores mean token F1 0.898; leaving out comment sections, post metadata, alt
# texts and bullets 0.937; skipping page chrome (<nav>, <figure>, and <header>/<footer>/<aside>
# unless they hold paragraphs: some sites put the whole article inside a <header>) 0.943; and
# trimming the leading and trailing lines that are not sentences 0.948 (trafilatura: 0.948-0.951).
MAIN_CONTENT = dict(main_content=True, preserve_formatting=True, comments=False, post_meta=False,
                    alt_texts=False, list_bullets=False)
SKIP_ELEMENTS = ["header:not(:has(p))", "footer:not(:has(p))", "aside:not(:has(p))", "nav", "figure",
                 "figcaption"]
SENTENCE_ENDS = (".", "!", "?", '"', "\u201d", "\u2019", ")")


def html_to_text(html: str) -> str:
    tree = HTMLTree.parse(html)
    text = trim_edges(extract_plain_text(tree, **MAIN_CONTENT, skip_elements=SKIP_ELEMENTS))
    if not text:  # the skipped elements held all there was: better some chrome than nothing
        text = trim_edges(extract_plain_text(tree, **MAIN_CONTENT))
    return text


def trim_edges(text: str, min_words: int = 4) -> str:
    """The text from its first to its last sentence-like line (at least `min_words` words, ending
    in sentence punctuation): what precedes and follows is menus, bylines, share bars. A text with
    no such line comes back as it is (stripped)."""
    lines = text.split("\n")
    good = [i for i, line in enumerate(lines)
            if line.rstrip().endswith(SENTENCE_ENDS) and len(line.split()) >= min_words]
    if good:
        lines = lines[good[0]:good[-1] + 1]
    return "\n".join(lines).strip()
