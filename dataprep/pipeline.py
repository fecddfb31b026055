"""The corpus job: extract -> filter -> exact + fuzzy dedup -> tokenize -> shards + manifest.

Per-file work runs as Ray tasks (dataprep/tasks.py); the few global decisions (which documents
duplicate which, the tokenizer) are made once in the driver from the tasks' small outputs.

output_dir/
  extract/<task>.parquet, extract/dropped/<task>.parquet      documents after extract + filter
  dedup/signatures/<task>.parquet, dedup/duplicates.parquet   hashes, MinHash, the decisions
  dedup/<task>.parquet, dedup/dropped/<task>.parquet          documents after dedup
  tokenize/<task>.parquet                                     token ids per document
  tokenizer.json, shard_*.bin/.idx, shard_*.docs.parquet, manifest.json, stats.json
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from dataprep import dedup, documents, extract, filters, tokenize
from dataprep.config import DataprepConfig
from dataprep.ingest import read_records
from dataprep.shards import ShardWriter, dtype_for_vocab, sha256_file
from dataprep.stats import drop, merge, stage_stats, table
from dataprep.tasks import TaskRunner, write_json

log = logging.getLogger("dataprep")


def task_name(path: Path) -> str:
    return path.name.replace(".", "_")


def input_files(cfg: DataprepConfig) -> list[Path]:
    root = Path(cfg.ingest.input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"ingest.input_dir={root}: no such folder")
    files = sorted(
        p for p in root.iterdir()
        if p.is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in cfg.ingest.patterns)
    )
    if not files:
        raise FileNotFoundError(f"no file in {root} matches ingest.patterns={list(cfg.ingest.patterns)}")
    return files


# --- tasks (run in Ray workers) ----------------------------------------------------------------

def extract_task(path: str, kept_out: str, dropped_out: str, cfg: DataprepConfig) -> dict:
    t0 = time.perf_counter()
    ex, fl = stage_stats(), stage_stats()
    keep_filter = filters.length_filter(cfg.filters.min_chars, cfg.filters.min_words)
    kept, dropped = [], []
    for rec in read_records(path, cfg.ingest.max_payload_bytes):
        ex["docs_in"] += 1
        ex["bytes_in"] += len(rec.payload)
        doc = documents.new_document(rec.id, "", rec.url, Path(path).name, rec.date)
        if rec.drop_reason is None:
            try:
                if rec.kind == "text":
                    doc["text"] = extract.decode(rec.payload, rec.charset)
                else:
                    doc["text"] = extract.html_to_text(extract.decode(rec.payload, rec.charset))
            except Exception as e:  # a broken page must not stop the file
                rec.drop_reason = "extract_failed"
                log.debug("extract failed for %s: %s", rec.id, e)
        if rec.drop_reason:
            drop(ex, rec.drop_reason)
            doc["drop_reason"] = rec.drop_reason
            dropped.append(doc)
            continue
        ex["docs_out"] += 1
        fl["docs_in"] += 1
        size = len(doc["text"].encode("utf-8"))
        ex["bytes_out"] += size
        fl["bytes_in"] += size
        reason = keep_filter(doc)
        if reason:
            drop(fl, reason)
            doc["drop_reason"] = reason
            dropped.append(doc)
        else:
            fl["docs_out"] += 1
            fl["bytes_out"] += size
            kept.append(doc)
    documents.write_documents(dropped_out, dropped)
    documents.write_documents(kept_out, kept)
    ex["seconds"] = time.perf_counter() - t0
    return {"docs_in": ex["docs_in"], "extract": ex, "filter": fl}


SIG_SCHEMA = pa.schema([("id", pa.string()), ("text_hash", pa.string()),
                        ("minhash", pa.list_(pa.uint32()))])


def signature_task(docs_path: str, out: str, cfg: DataprepConfig) -> dict:
    t0 = time.perf_counter()
    ids, texts = [], []
    for d in documents.read_documents(docs_path, ["id", "text"]):
        ids.append(d["id"])
        texts.append(d["text"])
    d = cfg.dedup
    sigs = dedup.signatures(texts, d.ngram, d.num_perm, d.seed) if d.fuzzy else np.zeros((len(ids), 0), np.uint32)
    table_ = pa.table(
        {"id": ids, "text_hash": [dedup.text_hash(t) for t in texts], "minhash": list(sigs)},
        schema=SIG_SCHEMA,
    )
    tmp = out + ".tmp"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table_, tmp)
    os.replace(tmp, out)
    return {"docs_in": len(ids), "seconds": time.perf_counter() - t0}


def dedup_filter_task(docs_path: str, duplicates_path: str, kept_out: str, dropped_out: str) -> dict:
    t0 = time.perf_counter()
    dups = {r["id"]: r for r in pq.read_table(duplicates_path).to_pylist()}
    s = stage_stats()
    kept, dropped = [], []
    for doc in documents.read_documents(docs_path):
        s["docs_in"] += 1
        s["bytes_in"] += len(doc["text"].encode("utf-8"))
        dup = dups.get(doc["id"])
        if dup:
            doc["drop_reason"], doc["duplicate_of"] = dup["reason"], dup["duplicate_of"]
            drop(s, dup["reason"])
            dropped.append(doc)
        else:
            s["docs_out"] += 1
            kept.append(doc)
    documents.write_documents(dropped_out, dropped)
    documents.write_documents(kept_out, kept)
    s["seconds"] = time.perf_counter() - t0
    return s


TOKENS_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("source", pa.string()),
                           ("tokens", pa.list_(pa.int32()))])


def tokenize_task(docs_path: str, tokenizer_path: str, eod_token: str, out: str) -> dict:
    t0 = time.perf_counter()
    tok = tokenize.load_tokenizer(tokenizer_path, eod_token)
    rows = list(documents.read_documents(docs_path, ["id", "url", "source", "text"]))
    ids = tokenize.encode_documents(tok, [r["text"] for r in rows], tok.token_to_id(eod_token))
    table_ = pa.table(
        {"id": [r["id"] for r in rows], "url": [r["url"] for r in rows],
         "source": [r["source"] for r in rows], "tokens": ids},
        schema=TOKENS_SCHEMA,
    )
    tmp = out + ".tmp"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table_, tmp)
    os.replace(tmp, out)
    n_tokens = sum(len(x) for x in ids)
    return {"docs_in": len(rows), "docs_out": len(rows), "dropped": {}, "tokens": n_tokens,
            "bytes_in": sum(len(r["text"].encode("utf-8")) for r in rows),
            "seconds": time.perf_counter() - t0}


# --- the job ---------------------------------------------------------------------------------

class Pipeline:
    def __init__(self, cfg: DataprepConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir).resolve()
        self.files = input_files(cfg)
        self.names = [task_name(p) for p in self.files]
        self.stats: dict[str, dict] = {}

    def path(self, *parts: str) -> str:
        return str(self.out.joinpath(*parts))

    def run(self) -> dict:
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        log.info("dataprep: %d input files from %s -> %s", len(self.files), self.cfg.ingest.input_dir, self.out)
        self.extract()
        self.deduplicate()
        self.tokenize()
        manifest = self.write_shards()
        summary = {
            "stages": self.stats,
            "input_files": [str(p) for p in self.files],
            "documents": manifest["total_documents"],
            "tokens": manifest["total_tokens"],
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(self.out / "stats.json", summary)
        log.info("\n%s", table(self.stats))
        log.info("%d documents, %d tokens in %d shards: %s (%.1fs)", manifest["total_documents"],
                 manifest["total_tokens"], len(manifest["shards"]), self.out / "manifest.json",
                 summary["seconds"])
        return summary

    def extract(self) -> None:
        tasks = {
            n: (str(f), self.path("extract", f"{n}.parquet"), self.path("extract", "dropped", f"{n}.parquet"), self.cfg)
            for n, f in zip(self.names, self.files)
        }
        results = TaskRunner("extract", self.out / "extract").run(extract_task, tasks)
        self.stats["extract"] = merge(results[n]["extract"] for n in self.names)
        self.stats["filter"] = merge(results[n]["filter"] for n in self.names)

    def deduplicate(self) -> None:
        d = self.cfg.dedup
        sig_tasks = {
            n: (self.path("extract", f"{n}.parquet"), self.path("dedup", "signatures", f"{n}.parquet"), self.cfg)
            for n in self.names
        }
        sig_stats = TaskRunner("minhash", self.out / "dedup" / "signatures").run(signature_task, sig_tasks)
        t0 = time.perf_counter()
        dup_path = self.out / "dedup" / "duplicates.parquet"
        decision = self.out / "dedup" / "_done" / "duplicates.json"
        if decision.is_file():
            found = json.loads(decision.read_text())
        else:
            sigs = pa.concat_tables(pq.read_table(self.path("dedup", "signatures", f"{n}.parquet")) for n in self.names)
            found = self._find_duplicates(sigs, dup_path)
            found["seconds"] = time.perf_counter() - t0 + sum(s["seconds"] for s in sig_stats.values())
            write_json(decision, found)
        filt_tasks = {
            n: (self.path("extract", f"{n}.parquet"), str(dup_path), self.path("dedup", f"{n}.parquet"),
                self.path("dedup", "dropped", f"{n}.parquet"))
            for n in self.names
        }
        results = TaskRunner("dedup", self.out / "dedup").run(dedup_filter_task, filt_tasks)
        s = merge(results[n] for n in self.names)
        s["seconds"] = round(s["seconds"] + found["seconds"], 3)
        s["clusters"] = found["clusters"]
        s["largest_cluster"] = found["largest_cluster"]
        self.stats["dedup"] = s

    def _find_duplicates(self, sigs: pa.Table, out: Path) -> dict:
        d = self.cfg.dedup
        ids = sigs.column("id").to_pylist()
        hashes = sigs.column("text_hash").to_pylist()
        rows: dict[str, tuple[str, str]] = {}
        if d.exact:
            first: dict[str, str] = {}
            for doc_id, h in sorted(zip(ids, hashes)):
                if h in first:
                    rows[doc_id] = ("exact_duplicate", first[h])
                else:
                    first[h] = doc_id
        clusters, largest = 0, 0
        if d.fuzzy and len(ids):
            keep = [i for i, doc_id in enumerate(ids) if doc_id not in rows]
            matrix = np.stack(sigs.column("minhash").to_numpy(zero_copy_only=False))[keep]
            near = dedup.near_duplicate_clusters([ids[i] for i in keep], matrix, d.threshold, d.num_perm, d.seed)
            sizes: dict[str, int] = {}
            for doc_id, survivor in near.items():
                rows[doc_id] = ("near_duplicate", survivor)
                sizes[survivor] = sizes.get(survivor, 1) + 1
            clusters, largest = len(sizes), max(sizes.values(), default=0)
        table_ = pa.table({
            "id": list(rows), "reason": [r[0] for r in rows.values()],
            "duplicate_of": [r[1] for r in rows.values()],
        }, schema=pa.schema([("id", pa.string()), ("reason", pa.string()), ("duplicate_of", pa.string())]))
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table_, str(out) + ".tmp")
        os.replace(str(out) + ".tmp", out)
        return {"clusters": clusters, "largest_cluster": largest, "duplicates": len(rows)}

    def tokenize(self) -> None:
        t = self.cfg.tokenizer
        tok_path = self.out / "tokenizer.json"
        marker = self.out / "tokenize" / "_done" / "tokenizer.json"
        t0 = time.perf_counter()
        if not marker.is_file():
            if t.path:
                tok = tokenize.load_tokenizer(t.path, t.eod_token)
                how = f"loaded {t.path}"
            else:
                tok = tokenize.train_bpe(self._training_texts(t.train_docs), t.vocab_size, t.min_frequency, t.eod_token)
                how = f"trained byte-level BPE, vocab {tok.get_vocab_size()}"
            tmp = str(tok_path) + ".tmp"
            tok.save(tmp)
            os.replace(tmp, tok_path)
            write_json(marker, {"how": how, "seconds": time.perf_counter() - t0})
        log.info("tokenizer: %s", json.loads(marker.read_text())["how"])
        tasks = {
            n: (self.path("dedup", f"{n}.parquet"), str(tok_path), t.eod_token, self.path("tokenize", f"{n}.parquet"))
            for n in self.names
        }
        results = TaskRunner("tokenize", self.out / "tokenize").run(tokenize_task, tasks)
        self.stats["tokenize"] = merge(results[n] for n in self.names)

    def _training_texts(self, limit: int):
        n = 0
        for name in self.names:
            for d in documents.read_documents(self.path("dedup", f"{name}.parquet"), ["text"]):
                if n >= limit:
                    return
                n += 1
                yield d["text"]

    def write_shards(self) -> dict:
        t = self.cfg.tokenizer
        tok = tokenize.load_tokenizer(self.out / "tokenizer.json", t.eod_token)
        vocab = tok.get_vocab_size()
        dtype = dtype_for_vocab(vocab)
        for old in self.out.glob("shard_*"):
            old.unlink()
        lineage: dict[int, list[dict]] = {}
        with ShardWriter(self.out, "shard", dtype, self.cfg.shards.shard_tokens) as writer:
            for name in self.names:
                for batch in pq.ParquetFile(self.path("tokenize", f"{name}.parquet")).iter_batches(batch_size=1024):
                    for row in batch.to_pylist():
                        shard_no = writer.add_document(np.asarray(row["tokens"], dtype=np.int64))
                        rows = lineage.setdefault(shard_no, [])
                        rows.append({"sequence": len(rows), "id": row["id"], "url": row["url"],
                                     "source": row["source"], "tokens": len(row["tokens"])})
        shards = writer.shards
        # Lineage: which document (id, url) each sequence of each shard came from.
        for i, shard in enumerate(shards):
            pq.write_table(pa.Table.from_pylist(lineage[i]), self.out / f"{shard['name']}.docs.parquet")
        total_tokens = sum(s["tokens"] for s in shards)
        total_docs = sum(s["documents"] for s in shards)
        manifest = {
            "format": "megatron-mmidx",
            "version": 1,
            "dtype": np.dtype(dtype).name,
            "tokenizer": {
                "path": "tokenizer.json",
                "sha256": sha256_file(self.out / "tokenizer.json"),
                "vocab_size": vocab,
                "eod_token": t.eod_token,
                "eod_id": tok.token_to_id(t.eod_token),
            },
            "sources": {
                "crawl": {"documents": total_docs, "tokens": total_tokens, "target_weight": 1.0,
                          "achieved_weight": 1.0 if total_tokens else 0.0, "epochs": 1.0},
            },
            "total_documents": total_docs,
            "total_tokens": total_tokens,
            "shards": shards,
            "config": asdict(self.cfg),
        }
        write_json(self.out / "manifest.json", manifest)
        return manifest


def run(cfg: DataprepConfig) -> dict:
    """Run the corpus job on Ray (RAY_ADDRESS / ray.address, else a local Ray)."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=cfg.ray.num_cpus, object_store_memory=cfg.ray.object_store_memory,
                     include_dashboard=False, logging_level=logging.WARNING)
    try:
        return Pipeline(cfg).run()
    finally:
        if started:
            ray.shutdown()
