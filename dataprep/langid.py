"""Language identification with py3langid (langid.py's naive Bayes model over byte n-grams, 97
languages); the model ships inside the package (an LZMA'd .npz, no pickle), so nothing is
downloaded at run time."""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Iterable, Optional

import numpy as np


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # noqa: PLC0415 - 1.5 s to load
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str, max_chars: int = 2000) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's language; ("", 0.0) when it has no letters.
    Only the first `max_chars` characters are read: enough for a stable answer, and langid's cost
    grows with the length."""
    sample = text[:max_chars]
    if not any(c.isalpha() for c in sample):
        return "", 0.0
    lang, prob = _identifier().classify(sample)
    return lang, float(np.float32(prob))  # float32: the same score on every machine


def language_filter(languages: Iterable[str], min_score: float = 0.0,
                    max_chars: int = 2000) -> Callable[[dict], Optional[str]]:
    """Sets `lang` and `lang_score` on a document; drops it (`language`) unless its language is
    one of `languages` with at least `min_score`. Empty `languages`: label only, keep all."""
    wanted = frozenset(languages)

    def check(doc: dict) -> Optional[str]:
        doc["lang"], doc["lang_score"] = identify(doc["text"], max_chars)
        if wanted and (doc["lang"] not in wanted or doc["lang_score"] < min_score):
            return "language"
        return None

    return check
