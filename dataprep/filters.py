"""Document filters: each returns None to keep a document or the reason to drop it."""

from __future__ import annotations

from typing import Callable, Optional

Filter = Callable[[dict], Optional[str]]


def length_filter(min_chars: int, min_words: int) -> Filter:
    def check(doc: dict) -> Optional[str]:
        text = doc["text"]
        if not text.strip():
            return "empty"
        if len(text) < min_chars or len(text.split()) < min_words:
            return "too_short"
        return None

    return check
