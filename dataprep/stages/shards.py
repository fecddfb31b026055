"""Stage `shards` (output_dir/shards/): the weighted mixture of the training documents and each
source's validation shards, as one shard set. From each training document's token count follows
the plan (how many copies of each document, in which order: dataprep/mixture.py); the shards are
written by reading each document's tokens and metadata from memory-mapped files (never the corpus
at once), each shard's lineage as it fills, then the manifest (dataprep/manifest.py).

A run writes its set into a new folder, shards/NNNNNN/, beside the set manifest.json names; then
replaces manifest.json (an atomic rename) and only then removes the old set. So a kill at any
moment leaves manifest.json naming a whole set (`python -m dataprep.verify` accepts it), and the
next run removes whatever a killed one left unpublished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataprep import mixture
from dataprep.documents import TableWriter
from dataprep.layout import CorpusLayout
from dataprep.manifest import write_manifest
from dataprep.shards import ShardWriter, dtype_for_vocab
from dataprep.stages import StageInputs, decontam, holdout
from dataprep.tokenize import load_tokenizer

NAME = "shards"
# Per shard, per sequence: which copy of which document of which source it holds.
LINEAGE_SCHEMA = pa.schema([
    ("sequence", pa.int64()), ("offset", pa.int64()), ("tokens", pa.int64()),
    ("mixture_source", pa.string()), ("id", pa.string()), ("url", pa.string()),
    ("source", pa.string()), ("copy", pa.int64()),
])
LINEAGE_BATCH = 8192  # lineage rows held before they are written
ORDER_BATCH = 8192  # entries of the mixture's order turned into Python ints at a time
# A test hook: the shards stage ends its process at once (as a kill would) at this numbered point
# (tests/test_shard_sets.py): 1 new set folder made, 2 first training shard written, 3 every
# training shard written, 4 validation shards written, 5 manifest replaced, 6 one old file removed.
EXIT_AT = "CCP_DEBUG_SHARDS_EXIT_AT"


def kill_point(n: int) -> None:
    if os.environ.get(EXIT_AT) == str(n):
        os._exit(86)


class LineageShards:
    """Documents into shards `<prefix>_NNNNN.bin/.idx` (ShardWriter) and, beside each, its lineage
    `<prefix>_NNNNN.docs.parquet` (one row per sequence), written LINEAGE_BATCH rows at a time
    while the shard fills. Use in a `with` block: the last shard is closed at its end."""

    def __init__(self, folder: Path, prefix: str, dtype: np.dtype, shard_tokens: int):
        self.folder, self.prefix = Path(folder), prefix
        self.writer = ShardWriter(folder, prefix, dtype, shard_tokens)
        self._lineage: TableWriter | None = None
        self._rows: dict[str, list] = {c: [] for c in LINEAGE_SCHEMA.names}
        self._shard = self._sequence = self._offset = 0

    @property
    def shards(self) -> list[dict]:
        """The finished shards, as ShardWriter lists them."""
        return self.writer.shards

    def add(self, tokens: np.ndarray, row: dict) -> None:
        """One document and its lineage row (mixture_source, id, url, source, copy)."""
        shard = self.writer.add_document(tokens)
        if shard != self._shard:  # the open shard was closed before this document
            self._close_lineage()
            self._shard = shard
        if self._lineage is None:
            path = self.folder / f"{self.prefix}_{shard:05d}.docs.parquet"
            self._lineage = TableWriter(path, LINEAGE_SCHEMA, use_dictionary=["mixture_source", "source"]).__enter__()
        for key, value in (("sequence", self._sequence), ("offset", self._offset), ("tokens", len(tokens)), *row.items()):
            self._rows[key].append(value)
        self._sequence += 1
        self._offset += len(tokens)
        if len(self._rows["sequence"]) >= LINEAGE_BATCH:
            self._write_rows()
        if len(self.writer.shards) > shard:  # this document filled its shard
            self._close_lineage()
            self._shard = shard + 1

    def _write_rows(self) -> None:
        self._lineage.write(pa.table(self._rows, schema=LINEAGE_SCHEMA))
        for rows in self._rows.values():
            rows.clear()

    def _close_lineage(self) -> None:
        if self._lineage is not None:
            self._write_rows()
            self._lineage.__exit__(None, None, None)
            self._lineage = None
        self._sequence = self._offset = 0

    def __enter__(self) -> "LineageShards":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.writer.close()
            self._close_lineage()
        else:
            self.writer.abort()
            if self._lineage is not None:
                self._lineage.__exit__(kind, error, traceback)


def write_training(folder: Path, mix: mixture.MixturePlan, splits: dict[str, holdout.Split], dtype: np.dtype,
                   shard_tokens: int) -> list[dict]:
    """The plan's document copies, in its order, into shards of about shard_tokens tokens with their
    lineage; the plan numbers each source's training documents (`Split.training`)."""
    names = list(splits)
    training = {name: s.training for name, s in splits.items()}
    copies_seen = {name: np.zeros(len(t), dtype=np.int32) for name, t in training.items()}
    with LineageShards(folder, "shard", dtype, shard_tokens) as out:
        for start in range(0, len(mix.order_source), ORDER_BATCH):
            end = start + ORDER_BATCH
            for s_no, i in zip(mix.order_source[start:end].tolist(), mix.order_doc[start:end].tolist()):
                name = names[s_no]
                src, doc = splits[name].tokens, int(training[name][i])
                out.add(src.tokens(doc), {"mixture_source": name, **src.metadata(doc), "copy": int(copies_seen[name][i])})
                copies_seen[name][i] += 1
                if len(out.shards) == 1:
                    kill_point(2)
    return out.shards


def write_validation(folder: Path, name: str, split: holdout.Split, dtype: np.dtype, shard_tokens: int) -> list[dict]:
    """A source's held-out documents, each once, in hash order, into `val_<source>_NNNNN` shards."""
    with LineageShards(folder, f"val_{name}", dtype, shard_tokens) as out:
        for doc in split.validation.tolist():
            out.add(split.tokens.tokens(doc), {"mixture_source": name, **split.tokens.metadata(doc), "copy": 0})
    return out.shards


def published(layout: CorpusLayout) -> Path | None:
    """The folder of the shard set manifest.json names (None: no manifest, or an older layout's
    shards beside it)."""
    if not layout.manifest.is_file():
        return None
    folder = json.loads(layout.manifest.read_text()).get("shard_set")
    return layout.root / folder if folder else None


def remove_sets(layout: CorpusLayout, keep: Path | None, older_layout: bool = False) -> None:
    """Remove every shard set but `keep` (and, with older_layout, the shard files beside the
    manifest that older versions wrote)."""
    old = [p for p in layout.shard_sets() if p != keep] + (layout.shard_files() if older_layout else [])
    for path in old:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        kill_point(6)


def _validation(inputs: StageInputs, splits: dict[str, holdout.Split], written: dict[str, list[dict]]) -> dict | None:
    """The manifest's validation section: how documents were held out, and each source's shards."""
    v = inputs.cfg.validation
    if not v.enabled:
        return None
    out = {"fraction": v.fraction, "min_documents": v.min_documents, "max_tokens": v.max_tokens,
           "overlap_tokens": v.overlap_tokens, "seed": v.seed, "selection": "documents ranked by a seeded "
           "hash of their id, per source, before the mixture; training documents sharing a span of "
           "overlap_tokens tokens with a held-out one are left out of training"}
    entries = {}
    for name, s in splits.items():
        entry = {"documents": len(s.validation), "tokens": int(s.tokens.lengths[s.validation].sum()),
                 "overlapping_documents": len(s.overlapping), "shards": written[name]}
        if not len(s.validation):
            entry["note"] = f"no document held out: the source has {len(s.tokens)} document(s)"
        entries[name] = entry
    out["total_documents"] = sum(e["documents"] for e in entries.values())
    out["total_tokens"] = sum(e["tokens"] for e in entries.values())
    out["sources"] = entries
    return out


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict, dict]:
    """The manifest it wrote."""
    cfg = inputs.cfg
    t, m = cfg.tokenizer, cfg.mixture
    t0 = time.perf_counter()
    tok = load_tokenizer(layout.tokenizer, t.eod_token)
    dtype = dtype_for_vocab(tok.get_vocab_size())
    splits: dict[str, holdout.Split] = inputs.outputs[holdout.NAME]
    current = published(layout)
    remove_sets(layout, keep=current)  # what a killed run left unpublished
    folder = layout.shard_set(max((int(p.name) for p in layout.shard_sets()), default=0) + 1)
    folder.mkdir(parents=True)
    kill_point(1)
    for name, s in splits.items():
        s.tokens.write_metadata(layout.document_metadata(name))
    total, anchor, epochs = m.size()
    mix = mixture.plan({n: s.tokens.lengths[s.training] for n, s in splits.items()},
                       {n: s.weight for n, s in inputs.sources.items()},
                       total_tokens=total, anchor=anchor, anchor_epochs=epochs, seed=m.seed, tolerance=m.tolerance)
    relative = lambda shards: [{**e, "bin": layout.relative(folder / e["bin"]),  # noqa: E731
                                "idx": layout.relative(folder / e["idx"])} for e in shards]
    shards = relative(write_training(folder, mix, splits, dtype, cfg.shards.shard_tokens))
    kill_point(3)
    written = {name: relative(write_validation(folder, name, s, dtype, cfg.shards.shard_tokens))
               for name, s in splits.items()}
    kill_point(4)
    summary = mix.summary()
    docs = inputs.outputs[decontam.NAME]
    for name, entry in summary.items():
        src = inputs.sources[name]
        listed = ([layout.relative(p) for p in docs[name].values()] if src.kind == "crawl"
                  else [str(f) for f in inputs.source_files[name].values()])
        summary[name] = {"kind": src.kind, "files": listed, **entry}
    manifest = write_manifest(layout, cfg, tok, dtype, mix, summary, shards, layout.relative(folder),
                              _validation(inputs, splits, written))
    kill_point(5)
    remove_sets(layout, keep=folder, older_layout=True)
    return manifest, {"mixture": {"seconds": round(time.perf_counter() - t0, 3), "sources": summary}}
