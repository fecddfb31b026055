"""Stage `shards` (output_dir/shard_*): the weighted mixture. From each document's token count
follows the plan (how many copies of each document, in which order: dataprep/mixture.py); the
shards are written by reading each document's tokens from its tokenized file (never the whole
corpus at once), with a lineage file per shard and the manifest (dataprep/manifest.py)."""

from __future__ import annotations

import functools
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataprep import mixture
from dataprep.layout import CorpusLayout
from dataprep.manifest import write_manifest
from dataprep.shards import IndexedShard, ShardWriter, dtype_for_vocab
from dataprep.stages import StageInputs, decontam, tokenize
from dataprep.tokenize import load_tokenizer

NAME = "shards"
# Per shard, per sequence: which copy of which document of which source it holds.
LINEAGE_SCHEMA = pa.schema([
    ("sequence", pa.int64()), ("offset", pa.int64()), ("tokens", pa.int64()),
    ("mixture_source", pa.string()), ("id", pa.string()), ("url", pa.string()),
    ("source", pa.string()), ("copy", pa.int64()),
])


class SourceTokens:
    """One mixture source's tokenized files, non-empty ones, and each document's metadata; the
    tokens stay on disk, read through memory maps when a document is written."""

    def __init__(self, files: dict[str, tokenize.TokenizedFile]):
        tables = [(f.tokens, pq.read_table(f.counts)) for f in files.values()]
        tables = [(path, table) for path, table in tables if table.num_rows]
        self.paths = [path for path, _ in tables]
        meta = pa.concat_tables([t for _, t in tables]) if tables else tokenize.TOKENS_SCHEMA.empty_table()
        self.starts = np.cumsum([0] + [t.num_rows for _, t in tables])
        self.lengths = meta.column("tokens").to_numpy()
        self.ids, self.urls, self.files = (meta.column(c).to_pylist() for c in ("id", "url", "source"))

    def where(self, doc: int) -> tuple[str, int]:
        """The tokenized file that holds document `doc`, and its sequence there."""
        f = int(np.searchsorted(self.starts, doc, side="right")) - 1
        return self.paths[f], doc - int(self.starts[f])


def write_shards(layout: CorpusLayout, mix: mixture.MixturePlan, by_source: dict[str, SourceTokens],
                 dtype: np.dtype, shard_tokens: int) -> list[dict]:
    """The plan's document copies, in its order, into shards of about shard_tokens tokens, and each
    shard's lineage (which document each sequence holds); returns ShardWriter's list of shards."""
    open_shard = functools.lru_cache(maxsize=64)(IndexedShard)  # a bounded number open at once
    names = list(by_source)
    copies_seen = {n: np.zeros(len(s.lengths), dtype=np.int64) for n, s in by_source.items()}
    lineage: list[dict] = []

    def flush(shard: dict) -> None:
        pq.write_table(pa.Table.from_pylist(lineage, schema=LINEAGE_SCHEMA), layout.lineage(shard["name"]))
        lineage.clear()

    with ShardWriter(layout.root, layout.SHARD_PREFIX, dtype, shard_tokens) as writer:
        current, offset = 0, 0
        for s_no, doc in zip(mix.order_source.tolist(), mix.order_doc.tolist()):
            name = names[s_no]
            src = by_source[name]
            path, sequence = src.where(doc)
            tokens = open_shard(path)[sequence]
            shard_no = writer.add_document(tokens)
            if shard_no != current:  # the open shard was closed before this document
                flush(writer.shards[current])
                current, offset = shard_no, 0
            lineage.append({"sequence": len(lineage), "offset": offset, "tokens": len(tokens),
                            "mixture_source": name, "id": src.ids[doc], "url": src.urls[doc],
                            "source": src.files[doc], "copy": int(copies_seen[name][doc])})
            copies_seen[name][doc] += 1
            offset += len(tokens)
            if len(writer.shards) > shard_no:  # this document filled its shard
                flush(writer.shards[shard_no])
                current, offset = shard_no + 1, 0
    if lineage:  # the last shard, finalized by close()
        flush(writer.shards[current])
    return writer.shards


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict, dict]:
    """The manifest it wrote."""
    cfg = inputs.cfg
    t, m = cfg.tokenizer, cfg.mixture
    t0 = time.perf_counter()
    tok = load_tokenizer(layout.tokenizer, t.eod_token)
    dtype = dtype_for_vocab(tok.get_vocab_size())
    for old in layout.shard_files():
        old.unlink()
    by_source = {name: SourceTokens(files) for name, files in inputs.outputs[tokenize.NAME].items()}
    total, anchor, epochs = m.size()
    mix = mixture.plan({n: s.lengths for n, s in by_source.items()}, {n: s.weight for n, s in inputs.sources.items()},
                       total_tokens=total, anchor=anchor, anchor_epochs=epochs, seed=m.seed, tolerance=m.tolerance)
    shards = write_shards(layout, mix, by_source, dtype, cfg.shards.shard_tokens)
    summary = mix.summary()
    docs = inputs.outputs[decontam.NAME]
    for name, entry in summary.items():
        src = inputs.sources[name]
        listed = ([layout.relative(p) for p in docs[name].values()] if src.kind == "crawl"
                  else [str(f) for f in inputs.source_files[name].values()])
        summary[name] = {"kind": src.kind, "files": listed, **entry}
    manifest = write_manifest(layout, cfg, tok, dtype, mix, summary, shards)
    return manifest, {"mixture": {"seconds": round(time.perf_counter() - t0, 3), "sources": summary}}
