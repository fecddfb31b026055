"""A weighted mixture of document sources, as in GPT-3's Table 2.2.

Each source (the job's filtered crawl, reference text files, any JSONL or Parquet dataset) has a
weight: its share of the training tokens. The mixture's size is a total token budget, or a number
of epochs of one anchor source. From the sources' token counts follow each source's epochs:
above 1 a source is upsampled (every document repeated, a seeded subset once more), below 1
subsampled (a seeded subset of its documents). Whole documents are taken, a seeded subset packed
close to the target (`document_copies`), so the achieved shares miss the targets by less than a
document; where that is more than `tolerance` (a source of a few large documents) the plan says
why. The written order is one seeded shuffle of every document copy across all sources.

Everything here works on per-document token counts, never on the tokens themselves.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from dataprep import documents
from dataprep.config import MixtureSourceConfig
from dataprep.readers import read_jsonl

# --- reading a source's files into documents ----------------------------------------------------

_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_PRODUCED = re.compile(r"\A\s*Produced by[^\n]*\n", re.I)
_GUTENBERG_END_LINE = re.compile(r"\n[^\n]*End of (the )?Project Gutenberg[^\n]*\s*\Z", re.I)
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $", re.M)


def strip_gutenberg(text: str) -> str:
    """The book between Project Gutenberg's '*** START OF ...' and '*** END OF ...' lines, without
    the producer's credit and the 'End of the Project Gutenberg EBook' line; text without the
    markers comes back unchanged."""
    start, end = _GUTENBERG_START.search(text), _GUTENBERG_END.search(text)
    if start is None or end is None or end.start() < start.end():
        return text
    body = text[start.end():end.start()]
    body = _GUTENBERG_PRODUCED.sub("", body, count=1)
    return _GUTENBERG_END_LINE.sub("\n", body).strip() + "\n"


def split_text(text: str, split: str, chunk_chars: int) -> list[str]:
    """The documents of one text file (empty ones left out)."""
    if split == "file":
        parts = [text]
    elif split == "headings":  # WikiText: an article starts at its ' = Title = ' line
        starts = [m.start() for m in _WIKITEXT_TITLE.finditer(text)]
        bounds = [0] + starts + [len(text)] if not starts or starts[0] else starts + [len(text)]
        parts = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    elif split == "chunks":  # about chunk_chars each, cut after a line
        parts, current, size = [], [], 0
        for line in text.splitlines(keepends=True):
            current.append(line)
            size += len(line)
            if size >= chunk_chars:
                parts.append("".join(current))
                current, size = [], 0
        parts.append("".join(current))
    else:
        raise ValueError(f"unknown split {split!r}")
    return [p.strip() for p in parts if p.strip()]


def _field(row: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(row, dict):
            return None
        row = row.get(key)
    return row


def read_source_file(path: Path, name: str, s: MixtureSourceConfig, unreadable: dict[str, int] | None = None) -> Iterator[dict]:
    """Documents of one file of source `name`; a document without text has drop_reason 'empty'.
    JSON lines that are no documents (not UTF-8, not JSON) are counted in `unreadable` by reason
    (dataprep/readers.py: read_jsonl).

    Ids are `<source>/<file>#<n>` unless the records carry their own; the url is the record's,
    else the file's (file://...#n).
    """
    path = Path(path)
    uri = path.resolve().as_uri()

    def doc(i: int, text, doc_id=None, url=None) -> dict:
        d = documents.new_document(str(doc_id) if doc_id not in (None, "") else f"{name}/{path.name}#{i}",
                                   text if isinstance(text, str) else "",
                                   str(url) if url else f"{uri}#{i}", path.name)
        if not d["text"].strip():
            d["drop_reason"] = "empty"
        return d

    if s.kind == "text":
        with open(path, encoding="utf-8-sig") as f:  # universal newlines: CRLF books read as LF
            text = f.read()
        if s.strip_gutenberg:
            text = strip_gutenberg(text)
        for i, part in enumerate(split_text(text, s.split, s.chunk_chars)):
            yield doc(i, part)
    elif s.kind == "jsonl":
        for i, row in read_jsonl(path, unreadable):
            yield doc(i, _field(row, s.text_field), _field(row, s.id_field), _field(row, s.url_field))
    elif s.kind == "parquet":
        i = 0
        for batch in documents.open_parquet(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield doc(i, _field(row, s.text_field), _field(row, s.id_field), _field(row, s.url_field))
                i += 1
    else:
        raise ValueError(f"source {name}: kind {s.kind!r} is not read from files")


# --- the plan: epochs, document copies, order ---------------------------------------------------

@dataclass
class SourcePlan:
    name: str
    target_weight: float  # normalized weight
    lengths: np.ndarray  # tokens of each document (end-of-document token included)
    target_tokens: float
    epochs: float  # target tokens / the source's tokens
    copies: np.ndarray = field(repr=False)  # how many times each document is written

    @property
    def documents(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def tokens_written(self) -> int:
        return int((self.lengths * self.copies).sum())

    @property
    def documents_written(self) -> int:
        return int(self.copies.sum())


@dataclass
class MixturePlan:
    sources: list[SourcePlan]
    total_target: float
    order_source: np.ndarray  # the written sequence: source number of each document copy ...
    order_doc: np.ndarray  # ... and the document's number within its source
    tolerance: float

    @property
    def tokens_written(self) -> int:
        return sum(s.tokens_written for s in self.sources)

    def summary(self) -> dict[str, dict]:
        """Per source: target and achieved weights, epochs, documents and tokens (for the manifest)."""
        total = self.tokens_written
        out = {}
        for s in self.sources:
            achieved = s.tokens_written / total if total else 0.0
            entry = {
                "target_weight": round(s.target_weight, 6),
                "achieved_weight": round(achieved, 6),
                "epochs": float(f"{s.epochs:.7g}"),
                "achieved_epochs": float(f"{s.tokens_written / s.tokens:.7g}") if s.tokens else 0.0,
                "target_tokens": int(round(s.target_tokens)),
                "tokens": s.tokens_written,
                "documents": s.documents_written,
                "source_tokens": s.tokens,
                "source_documents": s.documents,
            }
            note = self._note(s, achieved)
            if note:
                entry["note"] = note
            out[s.name] = entry
        return out

    def _note(self, s: SourcePlan, achieved: float) -> str | None:
        off = achieved - s.target_weight
        if abs(off) <= self.tolerance:
            return None
        if not s.documents:
            return f"the source has no documents, so it cannot reach its share ({s.target_weight:.2%})"
        total = max(self.tokens_written, 1)
        median, smallest = int(np.median(s.lengths)), int(s.lengths.min())
        return (f"achieved share off by {off * 100:+.2f} points: whole documents are sampled, and this "
                f"source's {s.documents} documents are coarse for a {total}-token mixture (median "
                f"{median} tokens, {median / total:.1%} of it; smallest {smallest})")


def source_rng(seed: int, name: str) -> np.random.Generator:
    # Keyed by name, so adding or removing another source leaves this one's subset as it was.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _subset(lengths: np.ndarray, target: float, rng: np.random.Generator) -> np.ndarray:
    """A seeded subset of documents holding about `target` tokens: in a random order, each taken
    while it still fits (first fit), then the smallest one left if overshooting by it is closer."""
    perm = rng.permutation(len(lengths))
    cum = np.cumsum(lengths[perm])
    head = int(np.searchsorted(cum, target, side="right"))  # the prefix that fits as a whole
    taken = np.zeros(len(lengths), dtype=bool)
    taken[perm[:head]] = True
    remaining = target - (float(cum[head - 1]) if head else 0.0)
    smallest = int(lengths.min())
    for i in perm[head:]:
        if remaining < smallest:
            break
        if lengths[i] <= remaining:
            taken[i] = True
            remaining -= float(lengths[i])
    left = np.flatnonzero(~taken)
    if remaining > 0 and len(left):
        j = left[np.argmin(lengths[left])]
        if lengths[j] - remaining < remaining:
            taken[j] = True
    return taken


def document_copies(lengths: np.ndarray, epochs: float, rng: np.random.Generator) -> np.ndarray:
    """How often each document is written for `epochs` passes: floor(epochs) times each, plus once
    more for a seeded subset of documents holding the fractional part's tokens.

    Above half a pass the subset is chosen as the complement of a seeded subset left out, so the
    count misses its target by less than the source's smallest document where the documents allow
    it (a source of a few large documents cannot come close: the plan's summary then says why).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    whole = int(np.floor(epochs + 1e-12))
    copies = np.full(len(lengths), whole, dtype=np.int64)
    total = float(lengths.sum())
    extra = (epochs - whole) * total
    if extra <= 0 or not len(lengths):
        return copies
    if extra <= total / 2:
        copies[_subset(lengths, extra, rng)] += 1
    else:
        copies[~_subset(lengths, total - extra, rng)] += 1
    return copies


def plan(lengths: dict[str, np.ndarray], weights: dict[str, float], *, total_tokens: int | None = None,
         anchor: str | None = None, anchor_epochs: float | None = None, seed: int = 1,
         tolerance: float = 0.01) -> MixturePlan:
    """The mixture of sources (per-document token counts, weights): copies of each document and
    the seeded order they are written in."""
    wsum = float(sum(weights.values()))
    shares = {n: weights[n] / wsum for n in lengths}
    tokens = {n: int(np.asarray(v, dtype=np.int64).sum()) for n, v in lengths.items()}
    if total_tokens is not None:
        total = float(total_tokens)
    else:
        if not tokens[anchor]:
            raise ValueError(f"mixture.anchor={anchor!r} has no tokens: nothing to size the mixture by")
        total = anchor_epochs * tokens[anchor] / shares[anchor]
    sources = []
    for name, ls in lengths.items():
        ls = np.asarray(ls, dtype=np.int64)
        target = shares[name] * total
        epochs = target / tokens[name] if tokens[name] else 0.0
        sources.append(SourcePlan(name, shares[name], ls, target, epochs,
                                  document_copies(ls, epochs, source_rng(seed, name))))
    order_source = np.concatenate([np.full(s.documents_written, i, dtype=np.int32) for i, s in enumerate(sources)]
                                  or [np.zeros(0, np.int32)])
    order_doc = np.concatenate([np.repeat(np.arange(s.documents, dtype=np.int64), s.copies) for s in sources]
                               or [np.zeros(0, np.int64)])
    perm = np.random.default_rng([seed]).permutation(len(order_source))
    return MixturePlan(sources, total, order_source[perm], order_doc[perm], tolerance)
