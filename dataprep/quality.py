"""The GPT-3 quality classifier: reference text (positives) vs raw crawl text (negatives).

GPT-3 (Brown et al. 2020, appendix A) trained a logistic regression on Spark's tokenizer +
HashingTF features, with curated text (WebText, Wikipedia, books) as positives and unfiltered
Common Crawl as negatives, and kept a crawl document when `np.random.pareto(alpha) > 1 - score`
with alpha = 9: mostly high scores, some low ones for diversity.

Here: hashed word 1..n-grams (scikit-learn's HashingVectorizer, L2-normalized) and a logistic
regression; a seeded held-out split gives precision, recall, F1 and ROC AUC. The model file is
safetensors (weights; no code runs on load) whose metadata holds the format name, the bias and the
feature settings as one JSON string, so `load` rebuilds exactly the vectorizer that trained it.

`pareto_keep` draws from a generator seeded by the document's id: a rerun, or the same document
in another task order, gets the same decision.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from dataprep.readers import glob_files, read_jsonl

FORMAT = "ccpretrain-quality-classifier/1"
WIKITEXT_MARKUP = re.compile(r" @(.)@ ")


@dataclass
class FeatureSettings:
    hash_bits: int = 18
    ngram: int = 2
    lowercase: bool = True
    max_chars: int = 20_000  # only a document's first characters are featurized

    def vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer  # noqa: PLC0415 - heavy import
        return HashingVectorizer(n_features=1 << self.hash_bits, ngram_range=(1, self.ngram),
                                 lowercase=self.lowercase, alternate_sign=False, norm="l2",
                                 token_pattern=r"(?u)\b\w+\b", dtype=np.float64)


class QualityModel:
    def __init__(self, weights: np.ndarray, bias: float, features: FeatureSettings, info: dict | None = None):
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = float(bias)
        self.features = features
        self.info = info or {}
        self._vectorizer = features.vectorizer()

    def score(self, texts: list[str]) -> np.ndarray:
        """P(reference-like) per text, float32."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        x = self._vectorizer.transform([t[:self.features.max_chars] for t in texts])
        z = x @ self.weights.astype(np.float64) + self.bias
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file  # noqa: PLC0415
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One metadata key: safetensors writes its metadata map in no fixed order, and a rerun
        # must write the same bytes.
        header = {"format": FORMAT, "features": self.features.__dict__, "bias": self.bias, "info": self.info}
        tmp = path.with_name(path.name + ".tmp")
        save_file({"weights": self.weights}, str(tmp), metadata={"ccpretrain": json.dumps(header, sort_keys=True)})
        tmp.replace(path)


def load(path: str | Path) -> QualityModel:
    """A model saved by `QualityModel.save` (safetensors: tensors + JSON strings, no code)."""
    from safetensors import safe_open  # noqa: PLC0415
    with safe_open(str(path), framework="numpy") as f:
        header = json.loads((f.metadata() or {}).get("ccpretrain", "{}"))
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: not a quality classifier ({FORMAT}); format={header.get('format')!r}")
        weights = f.get_tensor("weights")
    features = FeatureSettings(**header["features"])
    if weights.shape != (1 << features.hash_bits,):
        raise ValueError(f"{path}: weights of shape {weights.shape} do not match hash_bits={features.hash_bits}")
    return QualityModel(weights, float(header["bias"]), features, header.get("info", {}))


# --- training data -----------------------------------------------------------------------------------

def reference_documents(patterns: Iterable[str], chunk_chars: int) -> Iterator[str]:
    """Positives: each reference text file without its Project Gutenberg header and licence
    footer (and WikiText's ` @-@ ` markup), cut at line ends into documents of about chunk_chars."""
    from dataprep.mixture import split_text, strip_gutenberg  # noqa: PLC0415
    for path in glob_files(patterns):
        text = path.read_text("utf-8", errors="replace")
        text = WIKITEXT_MARKUP.sub(r"\1", strip_gutenberg(text))
        yield from split_text(text, "chunks", chunk_chars)


def jsonl_documents(patterns: Iterable[str], field: str = "text") -> Iterator[str]:
    """Texts of JSON-lines files (.gz too): more raw crawl negatives."""
    for path in glob_files(patterns):
        for _, row in read_jsonl(path):
            text = row.get(field) or ""
            if text.strip():
                yield text


# --- training ---------------------------------------------------------------------------------------

def train(positives: list[str], negatives: list[str], features: FeatureSettings, *, c: float = 1.0,
          heldout: float = 0.2, seed: int = 1) -> QualityModel:
    """Logistic regression on hashed n-grams; evaluation on a seeded, stratified held-out split
    (the model returned is the one trained without it, so the figures describe it)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score  # noqa: PLC0415
    from sklearn.model_selection import train_test_split  # noqa: PLC0415
    if not positives or not negatives:
        raise ValueError(f"quality classifier: need positives and negatives, got {len(positives)} and {len(negatives)}")
    texts = [t[:features.max_chars] for t in positives + negatives]
    labels = np.array([1] * len(positives) + [0] * len(negatives))
    tr, te = train_test_split(np.arange(len(texts)), test_size=heldout, random_state=seed, stratify=labels)
    vec = features.vectorizer()
    x = vec.transform(texts)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, solver="liblinear", random_state=seed)
    clf.fit(x[tr], labels[tr])
    prob = clf.predict_proba(x[te])[:, 1]
    pred = (prob >= 0.5).astype(int)
    info = {
        "positives": len(positives), "negatives": len(negatives),
        "train": len(tr), "heldout": len(te),
        "precision": round(float(precision_score(labels[te], pred, zero_division=0)), 4),
        "recall": round(float(recall_score(labels[te], pred, zero_division=0)), 4),
        "f1": round(float(f1_score(labels[te], pred, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(labels[te], prob)), 4),
        "threshold": 0.5, "c": c, "seed": seed,
    }
    return QualityModel(clf.coef_[0], float(clf.intercept_[0]), features, info)


# --- selection --------------------------------------------------------------------------------------

def document_seed(doc_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{doc_id}".encode()).digest()[:8], "little")


def pareto_keep(doc_id: str, score: float, alpha: float = 9.0, seed: int = 1) -> bool:
    """GPT-3's rule: keep when pareto(alpha) > 1 - score, the draw seeded by the document's id."""
    draw = np.random.default_rng(document_seed(doc_id, seed)).pareto(alpha)
    return bool(draw > 1.0 - float(score))


def keep(doc_id: str, score: float, mode: str, threshold: float, alpha: float, seed: int) -> bool:
    if mode == "pareto":
        return pareto_keep(doc_id, score, alpha, seed)
    if mode == "threshold":
        return float(score) >= threshold
    if mode == "none":  # score only
        return True
    raise ValueError(f"quality.selection={mode!r}: expected pareto, threshold or none")


def histogram(scores: np.ndarray, bins: int = 10) -> list[int]:
    return np.histogram(np.asarray(scores, dtype=np.float64), bins=bins, range=(0.0, 1.0))[0].tolist()

