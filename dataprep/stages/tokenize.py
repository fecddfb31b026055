"""Stage `tokenize` (output_dir/tokenize/<source>/): the tokenizer, made once in the driver
(output_dir/tokenizer.json: a byte-level BPE trained on a weighted sample of the mixture's sources,
or tokenizer.path as given); then one Ray task per documents file of each mixture source encodes
its documents, each ending in the end-of-document id."""

from __future__ import annotations

import logging
import os
import time
import zlib
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataprep.config import MixtureSourceConfig, TokenizerConfig
from dataprep.documents import open_parquet, read_documents, text_bytes, write_table
from dataprep.fingerprint import Fingerprint, combine, config_items, file_identity
from dataprep.layout import CorpusLayout
from dataprep.shards import ShardWriter, dtype_for_vocab
from dataprep.stages import StageInputs, decontam, source_task_name
from dataprep.stats import merge
from dataprep.tasks import TaskRunner, once
from dataprep.tokenize import encode_documents, load_tokenizer, train_bpe

NAME = "tokenize"
log = logging.getLogger("dataprep")
# Per document of a tokenized file; its tokens are sequence i of the file's `<task>_00000.bin/.idx`.
TOKENS_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("source", pa.string()),
                           ("tokens", pa.int64())])
ENCODE_BATCH = 1024


class TokenizedFile(NamedTuple):
    tokens: str  # the prefix of <task>_00000.bin/.idx: one sequence per document
    counts: str  # <task>.parquet: each document's id, url, source and number of tokens


def tokenize_task(docs_path: str, tokenizer_path: str, eod_token: str, out_dir: str, task: str) -> dict:
    """Encode one documents file into `out_dir/<task>_00000.bin/.idx` (one sequence per document,
    ending in the end-of-document id) and `out_dir/<task>.parquet` (id, url, source, tokens)."""
    t0 = time.perf_counter()
    tok = load_tokenizer(tokenizer_path, eod_token)
    eod = tok.token_to_id(eod_token)
    meta = {"id": [], "url": [], "source": [], "tokens": []}
    n_bytes = 0
    # One file of unbounded size: the task's documents in input order, streamed in batches.
    with ShardWriter(out_dir, task, dtype_for_vocab(tok.get_vocab_size()), shard_tokens=1 << 62) as writer:
        batches = open_parquet(docs_path).iter_batches(batch_size=ENCODE_BATCH, columns=["id", "url", "source", "text"])
        for batch in batches:
            rows = batch.to_pylist()
            texts = [r["text"] for r in rows]
            n_bytes += pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0
            for r, ids in zip(rows, encode_documents(tok, texts, eod)):
                writer.add_document(np.asarray(ids, dtype=np.int64))
                for key in ("id", "url", "source"):
                    meta[key].append(r[key])
                meta["tokens"].append(len(ids))
    write_table(pa.table(meta, schema=TOKENS_SCHEMA), os.path.join(out_dir, f"{task}.parquet"))
    n = len(meta["id"])
    return {"docs_in": n, "docs_out": n, "dropped": {}, "tokens": sum(meta["tokens"]),
            "bytes_in": n_bytes, "bytes_out": n_bytes, "seconds": time.perf_counter() - t0}


def _file_text_bytes(docs_path: str) -> int:
    """Bytes of the text column of a documents file, from the Parquet footer (no data read)."""
    md = pq.ParquetFile(docs_path).metadata
    col = md.schema.to_arrow_schema().get_field_index("text")
    return sum(md.row_group(i).column(col).total_uncompressed_size for i in range(md.num_row_groups))


def training_texts(t: TokenizerConfig, mixture: dict[str, MixtureSourceConfig],
                   docs: dict[str, dict[str, str]], sample: dict) -> Iterator[str]:
    """A seeded sample of about tokenizer.sample_bytes of text from the sources' documents files
    `docs`, each source contributing in proportion to its weight (all of it when it holds less).
    Counts what it yields in `sample`."""
    wsum = sum(s.weight for s in mixture.values())
    for name, src in mixture.items():
        files = list(docs[name].values())
        held = sum(_file_text_bytes(f) for f in files)
        budget = t.sample_bytes * src.weight / wsum
        keep = min(1.0, budget / held) if held else 0.0
        taken = 0
        for f in files:
            for d in read_documents(f, ["id", "text"]):
                if taken >= budget:
                    break
                # A document is in the sample when its seeded hash falls below `keep`.
                if keep < 1.0 and zlib.crc32(f"{t.seed}/{name}/{d['id']}".encode()) >= keep * 2**32:
                    continue
                size = text_bytes(d)
                taken += size
                sample["documents"] += 1
                sample["bytes"] += size
                yield d["text"]


def make_tokenizer(layout: CorpusLayout, inputs: StageInputs) -> dict:
    """Write output_dir/tokenizer.json; how it was made."""
    t = inputs.cfg.tokenizer
    t0 = time.perf_counter()
    if t.path:
        tok = load_tokenizer(t.path, t.eod_token)
        how = f"loaded {t.path}"
    else:
        sample = {"documents": 0, "bytes": 0}
        texts = training_texts(t, inputs.sources, inputs.outputs[decontam.NAME], sample)
        tok = train_bpe(texts, t.vocab_size, t.min_frequency, t.eod_token, t.special_tokens)
        how = (f"trained byte-level BPE, vocab {tok.get_vocab_size()}, on {sample['documents']} "
               f"documents ({sample['bytes'] / 1e6:.1f} MB) sampled from the mixture's sources")
    tmp = str(layout.tokenizer) + ".tmp"
    tok.save(tmp)
    os.replace(tmp, layout.tokenizer)
    return {"how": how, "seconds": time.perf_counter() - t0}


def tokenizer_fingerprint(inputs: StageInputs) -> Fingerprint:
    """The tokenizer given (its file and end-of-document token), or trained here: its settings,
    the sources' weights (the sample's proportions) and every source's documents."""
    t = inputs.cfg.tokenizer
    if t.path:
        return Fingerprint(config_items("tokenizer", t, ["path", "eod_token"]), {"tokenizer.path": file_identity(t.path)})
    docs = decontam.fingerprints(inputs)
    return Fingerprint({**config_items("tokenizer", t), **{f"mixture.sources.{n}.weight": s.weight for n, s in inputs.sources.items()}},
                       upstream={"sources": combine({f"{n}/{task}": fp for n, files in docs.items() for task, fp in files.items()})})


def fingerprints(inputs: StageInputs) -> dict[str, Fingerprint]:
    """Per documents file: the tokenizer and the documents."""
    tok = tokenizer_fingerprint(inputs).digest
    return {source_task_name(name, task): Fingerprint(upstream={"tokenizer": tok, "documents": fp.digest})
            for name, files in decontam.fingerprints(inputs).items() for task, fp in files.items()}


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict[str, dict[str, TokenizedFile]], dict]:
    """Every mixture source's tokens: source -> task -> its files."""
    t = inputs.cfg.tokenizer
    docs = inputs.outputs[decontam.NAME]
    info = once(layout.marker(NAME, "tokenizer"), lambda: make_tokenizer(layout, inputs), tokenizer_fingerprint(inputs),
                inputs.reruns, NAME)
    log.info("tokenizer: %s", info["how"])
    tasks = {
        source_task_name(name, task): (path, str(layout.tokenizer), t.eod_token, str(layout.stage_dir(NAME, name)), task)
        for name, files in docs.items() for task, path in files.items()
    }
    results = TaskRunner(NAME, layout.stage_dir(NAME), inputs.reruns).run(tokenize_task, tasks, fingerprints(inputs))
    s = merge(results.values())
    s["by_source"] = {name: sum(results[source_task_name(name, task)]["docs_out"] for task in files)
                      for name, files in docs.items()}
    outputs = {name: {task: TokenizedFile(layout.tokens(name, task), layout.token_counts(name, task)) for task in files}
               for name, files in docs.items()}
    return outputs, {"stages": {NAME: s}}
