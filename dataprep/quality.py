"""The GPT-3 quality classifier: reference text (positives) vs raw crawl text (negatives).

GPT-3 (Brown et al. 2020, appendix A) trained a logistic regression on Spark's tokenizer +
HashingTF features, with curated text (WebText, Wikipedia, books) as positives and unfiltered
Common Crawl as negatives, and kept a crawl document when `np.random.pareto(alpha) > 1 - score`
with alpha = 9: mostly high scores, some low ones for diversity.

Here: hashed word 1..n-grams (scikit-learn's HashingVectorizer, L2-normalized) and a logistic
regression, cross-fitted: every training example falls in one of k folds by a seeded hash of its
key (a crawl document's key is its id), fold model j trains on the examples outside fold j, and
a crawl document of fold j is scored by model j, which never saw it. So a document's score is a
function of its own text and of the training examples outside its fold, as a set: nothing in its
own fold (itself included) and no order of the training data changes it (rows are sorted before
fitting; tests/test_quality.py checks it). Each fold model's predictions on its own fold are the
held-out evaluation: precision, recall, F1 and ROC AUC over every example once.

The training set is bounded (`max_train_docs` per label), sampled deterministically within each
fold: the examples of the smallest seeded key hashes, so the sample too depends on nothing outside
the fold. The model file is safetensors (weights; no code runs on load) whose metadata holds the
format name, the biases, the fold seed and the feature settings as one JSON string, so `load`
rebuilds exactly the vectorizer that trained it. Text from elsewhere (another crawl, a later run
given quality.model_path) is scored by the mean of the fold models' logits.

`pareto_keep` draws from a generator seeded by the document's id: a rerun, or the same document
in another task order, gets the same decision.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from dataprep.readers import glob_files, read_jsonl

FORMAT = "ccpretrain-quality-classifier/2"
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


def fold_of(key: str, folds: int, seed: int) -> int:
    """The fold of a training example or crawl document, by a seeded hash of its key (its id)."""
    return document_seed(f"fold/{key}", seed) % folds


class QualityModel:
    """k fold models (weights (k, 2**hash_bits), biases (k,)) over one feature space; k = 1 for a
    model trained without folds."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, features: FeatureSettings, fold_seed: int = 1,
                 info: dict | None = None):
        self.weights = np.atleast_2d(np.asarray(weights, dtype=np.float32))
        self.bias = np.atleast_1d(np.asarray(bias, dtype=np.float64))
        self.features, self.fold_seed = features, fold_seed
        self.info = info or {}
        self._vectorizer = features.vectorizer()

    @property
    def folds(self) -> int:
        return len(self.weights)

    def _logits(self, texts: list[str]) -> np.ndarray:
        """(len(texts), folds): each fold model's logit of each text."""
        x = self._vectorizer.transform([t[:self.features.max_chars] for t in texts])
        return np.asarray(x @ self.weights.T.astype(np.float64)) + self.bias

    def score(self, texts: list[str]) -> np.ndarray:
        """P(reference-like) per text from the mean of the fold models' logits, float32: for text
        none of them trained on."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return _sigmoid(self._logits(texts).mean(axis=1))

    def score_held_out(self, keys: list[str], texts: list[str]) -> np.ndarray:
        """P(reference-like) per text from the model of its key's fold, the one that did not train
        on it, float32: for the documents of the crawl it was trained on."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        folds = np.array([fold_of(k, self.folds, self.fold_seed) for k in keys])
        return _sigmoid(self._logits(texts)[np.arange(len(texts)), folds])

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file  # noqa: PLC0415
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One metadata key: safetensors writes its metadata map in no fixed order, and a rerun
        # must write the same bytes.
        header = {"format": FORMAT, "features": self.features.__dict__, "bias": self.bias.tolist(),
                  "fold_seed": self.fold_seed, "info": self.info}
        tmp = path.with_name(path.name + ".tmp")
        save_file({"weights": self.weights}, str(tmp), metadata={"ccpretrain": json.dumps(header, sort_keys=True)})
        tmp.replace(path)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def load(path: str | Path) -> QualityModel:
    """A model saved by `QualityModel.save` (safetensors: tensors + JSON strings, no code)."""
    from safetensors import safe_open  # noqa: PLC0415
    with safe_open(str(path), framework="numpy") as f:
        header = json.loads((f.metadata() or {}).get("ccpretrain", "{}"))
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: not a quality classifier ({FORMAT}); format={header.get('format')!r}")
        weights = f.get_tensor("weights")
    features = FeatureSettings(**header["features"])
    bias = np.asarray(header["bias"], dtype=np.float64)
    if weights.ndim != 2 or weights.shape != (len(bias), 1 << features.hash_bits):
        raise ValueError(f"{path}: weights of shape {weights.shape} do not match {len(bias)} folds and "
                         f"hash_bits={features.hash_bits}")
    return QualityModel(weights, bias, features, header["fold_seed"], header.get("info", {}))


# --- training data: (key, text) examples ------------------------------------------------------------

def reference_documents(patterns: Iterable[str], chunk_chars: int) -> Iterator[tuple[str, str]]:
    """Positives, (key, text): each reference text file without its Project Gutenberg header and
    licence footer (and WikiText's ` @-@ ` markup), cut at line ends into documents of about
    chunk_chars; key `reference:<file>#<n>`."""
    from dataprep.mixture import split_text, strip_gutenberg  # noqa: PLC0415
    for path in glob_files(patterns):
        text = path.read_text("utf-8", errors="replace")
        text = WIKITEXT_MARKUP.sub(r"\1", strip_gutenberg(text))
        for i, chunk in enumerate(split_text(text, "chunks", chunk_chars)):
            yield f"reference:{path.name}#{i}", chunk


def jsonl_documents(patterns: Iterable[str], dropped: dict[str, int] | None = None,
                    field: str = "text") -> Iterator[tuple[str, str]]:
    """More raw crawl negatives, (key, text), from JSON-lines files (.gz too); key
    `jsonl:<file>#<line>`. Lines that are no documents are counted in `dropped` (read_jsonl)."""
    for path in glob_files(patterns):
        for i, row in read_jsonl(path, dropped):
            text = row.get(field)
            if isinstance(text, str) and text.strip():
                yield f"jsonl:{path.name}#{i}", text


class FoldSample:
    """A deterministic sample of about `limit` examples of one label: in each of the folds, the
    ceil(limit / folds) examples of the smallest seeded key hashes. What it keeps of a fold depends
    on that fold's examples alone, not on their order. Holds at most that many texts, each cut to
    max_chars (the part the features read)."""

    def __init__(self, folds: int, limit: int, seed: int, max_chars: int):
        self.folds, self.seed, self.max_chars = folds, seed, max_chars
        self.per_fold = -(-limit // folds)
        self.offered = 0
        # Per fold, the kept examples as (-hash, key, text): the heap's top is the largest hash kept.
        self._heaps: list[list[tuple[int, str, str]]] = [[] for _ in range(folds)]

    def offer(self, key: str, text: str) -> None:
        self.offered += 1
        heap = self._heaps[fold_of(key, self.folds, self.seed)]
        item = (-document_seed(f"sample/{key}", self.seed), key, text[:self.max_chars])
        if len(heap) < self.per_fold:
            heapq.heappush(heap, item)
        elif item > heap[0]:  # a smaller hash than the largest kept (ties: a total order all the same)
            heapq.heapreplace(heap, item)

    def examples(self) -> list[tuple[str, str, int]]:
        """(key, text, fold) of every kept example, sorted by key."""
        return sorted((key, text, fold) for fold, heap in enumerate(self._heaps) for _, key, text in heap)


# --- training ---------------------------------------------------------------------------------------

def train(positives: Iterable[tuple[str, str]], negatives: Iterable[tuple[str, str]], features: FeatureSettings, *,
          c: float = 1.0, folds: int = 5, max_train_docs: int = 10_000, seed: int = 1) -> QualityModel:
    """Cross-fitted logistic regression on hashed n-grams (see the module doc): (key, text)
    examples, each label sampled to at most max_train_docs (FoldSample); one model per fold,
    trained on the other folds' examples (rows sorted by label and key), evaluated on its own."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score  # noqa: PLC0415
    samples = []
    for examples in (positives, negatives):
        sample = FoldSample(folds, max_train_docs, seed, features.max_chars)
        for key, text in examples:
            sample.offer(key, text)
        samples.append(sample)
    rows = [(label, key, text, fold) for label, sample in ((1, samples[0]), (0, samples[1]))
            for key, text, fold in sample.examples()]
    labels = np.array([r[0] for r in rows])
    fold = np.array([r[3] for r in rows])
    x = features.vectorizer().transform([r[2] for r in rows])
    del rows
    weights = np.zeros((folds, 1 << features.hash_bits), dtype=np.float32)
    bias = np.zeros(folds)
    held_out = np.zeros(len(labels))
    for j in range(folds):
        train_rows, test_rows = np.flatnonzero(fold != j), np.flatnonzero(fold == j)
        classes = np.bincount(labels[train_rows], minlength=2)
        if classes.min() == 0:
            raise ValueError(f"quality classifier: the training data outside fold {j} of {folds} holds "
                             f"{classes[1]} positives and {classes[0]} negatives; it needs both (fewer "
                             f"quality.folds, or more data)")
        # liblinear's dual solver: 7x faster than its primal here (far more features than documents).
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, solver="liblinear", dual=True,
                                 random_state=seed)
        clf.fit(x[train_rows], labels[train_rows])
        weights[j], bias[j] = clf.coef_[0], clf.intercept_[0]
        held_out[test_rows] = clf.predict_proba(x[test_rows])[:, 1]
    pred = (held_out >= 0.5).astype(int)
    both = len(set(labels.tolist())) == 2
    info = {
        "positives": samples[0].offered, "negatives": samples[1].offered,
        "trained_positives": int(labels.sum()), "trained_negatives": int(len(labels) - labels.sum()),
        "folds": folds, "max_train_docs": max_train_docs,
        "heldout": "cross-fitted: each example predicted by the fold model that did not train on it",
        "precision": round(float(precision_score(labels, pred, zero_division=0)), 4),
        "recall": round(float(recall_score(labels, pred, zero_division=0)), 4),
        "f1": round(float(f1_score(labels, pred, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(labels, held_out)), 4) if both else None,
        "threshold": 0.5, "c": c, "seed": seed,
    }
    return QualityModel(weights, bias, features, seed, info)


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

