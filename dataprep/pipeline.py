"""The corpus job: extract -> language id -> filters -> quality classifier -> exact + fuzzy dedup ->
mixture sources -> tokenize -> weighted mixture -> shards + manifest.

Per-file work runs as Ray tasks (dataprep/tasks.py); the few global decisions (which documents
duplicate which, the tokenizer, the mixture plan) are made once in the driver from the tasks'
small outputs.

output_dir/
  extract/<task>.parquet, extract/dropped/<task>.parquet      documents after extract, language id, filters
  quality/model.safetensors, quality/<task>.parquet (+dropped) the quality classifier; scored, selected documents
  dedup/exact, signatures, bands, edges, components, clusters/ dedup stages (dataprep/dedup_stages.py)
  dedup/<task>.parquet, dedup/dropped/<task>.parquet          documents after dedup (the crawl)
  sources/<source>/<task>.parquet                             documents of the other sources
  tokenize/<source>/<task>_00000.bin/.idx, <task>.parquet     tokens per document (+ id, url)
  tokenizer.json, shard_*.bin/.idx, shard_*.docs.parquet, manifest.json, stats.json
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataprep import documents, extract, filters, ingest, langid, mixture, quality, tokenize
from dataprep.config import DataprepConfig, MixtureSourceConfig, QualityConfig
from dataprep.dedup_stages import Deduplicator
from dataprep.readers import file_name, glob_files, list_inputs, task_name
from dataprep.shards import IndexedShard, ShardWriter, dtype_for_vocab, sha256_file
from dataprep.stats import drop, format_rows, merge, stage_stats, table
from dataprep.tasks import TaskRunner, ray_session, write_json

log = logging.getLogger("dataprep")


def input_files(cfg: DataprepConfig) -> list[Path | str]:
    """Input archives: local paths, or URLs when ingest.input_dir is an fsspec URL."""
    files = list_inputs(cfg.ingest.input_dir, cfg.ingest.patterns, "ingest.")
    return [Path(f) if "://" not in f else f for f in files]


# --- tasks (run in Ray workers) ----------------------------------------------------------------

def record_filters(cfg: DataprepConfig) -> list:
    """The filter stage's checks, in order: length, Gopher repetition, Gopher quality, C4, and
    length again (C4 removes lines)."""
    f = cfg.filters
    checks = [filters.length_filter(f.min_chars, f.min_words)]
    if f.gopher_repetition.enabled:
        checks.append(filters.gopher_repetition_filter(**asdict(f.gopher_repetition)))
    if f.gopher_quality.enabled:
        checks.append(filters.gopher_quality_filter(**asdict(f.gopher_quality)))
    if f.c4.enabled:
        checks += [filters.c4_filter(**asdict(f.c4)), checks[0]]
    return checks


def extract_task(path: str, kept_out: str, dropped_out: str, cfg: DataprepConfig) -> dict:
    """One archive: ingest -> extract (decode, main content) -> language -> filter. Every record
    is counted in exactly one place: a stage's dropped-by-reason or the kept output."""
    t0 = time.perf_counter()
    ex, lg, fl = stage_stats(), stage_stats(), stage_stats()
    lang_check = langid.language_filter(cfg.langid.languages, cfg.langid.min_score, cfg.langid.max_chars)
    checks = record_filters(cfg)
    langs: dict[str, int] = {}
    kept, dropped = [], []
    for rec in ingest.read_records(path, cfg.ingest.max_payload_bytes):
        ex["docs_in"] += 1
        ex["bytes_in"] += rec.raw_bytes
        doc = documents.new_document(rec.id, "", rec.url, file_name(path), rec.date)
        if rec.drop_reason is None:
            try:
                text, how = extract.decode_with_status(rec.payload, rec.charset)
                if how != extract.OK:
                    ex[how] = ex.get(how, 0) + 1
                doc["text"] = text if rec.kind == "text" else extract.html_to_text(text)
                if not doc["text"].strip():
                    rec.drop_reason = "empty"
            except Exception as e:  # a broken page must not stop the file
                rec.drop_reason = "extract_failed"
                log.debug("extract failed for %s: %s", rec.id, e)
        if rec.drop_reason:
            drop(ex, rec.drop_reason)
            doc["drop_reason"] = rec.drop_reason
            dropped.append(doc)
            continue
        size = len(doc["text"].encode("utf-8"))
        ex["docs_out"] += 1
        ex["bytes_out"] += size
        lg["docs_in"] += 1
        lg["bytes_in"] += size
        t1 = time.perf_counter()
        reason = lang_check(doc)
        lg["seconds"] += time.perf_counter() - t1
        langs[doc["lang"]] = langs.get(doc["lang"], 0) + 1
        if reason:
            drop(lg, reason)
            doc["drop_reason"] = reason
            dropped.append(doc)
            continue
        lg["docs_out"] += 1
        lg["bytes_out"] += size
        fl["docs_in"] += 1
        fl["bytes_in"] += size
        t1 = time.perf_counter()
        reason = filters.first_failure(doc, checks)
        fl["seconds"] += time.perf_counter() - t1
        if reason:
            drop(fl, reason)
            doc["drop_reason"] = reason
            dropped.append(doc)
        else:
            fl["docs_out"] += 1
            fl["bytes_out"] += len(doc["text"].encode("utf-8"))
            kept.append(doc)
    documents.write_documents(dropped_out, dropped)
    documents.write_documents(kept_out, kept)
    ex["seconds"] = time.perf_counter() - t0 - lg["seconds"] - fl["seconds"]
    lg["languages"] = dict(sorted(langs.items()))
    return {"docs_in": ex["docs_in"], "extract": ex, "language": lg, "filter": fl}


def quality_task(docs_path: str, model_path: str, kept_out: str, dropped_out: str, q: QualityConfig) -> dict:
    """Score one file's filtered documents (quality_score on every one) and select: Pareto or
    threshold, decided per document from its id and score alone."""
    t0 = time.perf_counter()
    model = quality.load(model_path)
    s = stage_stats()
    docs = list(documents.read_documents(docs_path))
    scores = model.score([d["text"] for d in docs])
    kept, dropped = [], []
    for doc, score in zip(docs, scores.tolist()):
        size = len(doc["text"].encode("utf-8"))
        s["docs_in"] += 1
        s["bytes_in"] += size
        doc["quality_score"] = score
        if quality.keep(doc["id"], score, q.selection, q.threshold, q.alpha, q.seed):
            s["docs_out"] += 1
            s["bytes_out"] += size
            kept.append(doc)
        else:
            doc["drop_reason"] = "quality"
            drop(s, "quality")
            dropped.append(doc)
    documents.write_documents(dropped_out, dropped)
    documents.write_documents(kept_out, kept)
    s["histogram"] = quality.histogram(scores)
    s["seconds"] = time.perf_counter() - t0
    return s


def source_task(path: str, name: str, source: MixtureSourceConfig, kept_out: str, dropped_out: str) -> dict:
    """One file of a mixture source (reference text, JSONL, Parquet) -> documents."""
    t0 = time.perf_counter()
    s = stage_stats()
    kept, dropped = [], []
    for doc in mixture.read_source_file(Path(path), name, source):
        size = len(doc["text"].encode("utf-8"))
        s["docs_in"] += 1
        s["bytes_in"] += size
        if doc["drop_reason"]:
            drop(s, doc["drop_reason"])
            dropped.append(doc)
        else:
            s["docs_out"] += 1
            s["bytes_out"] += size
            kept.append(doc)
    documents.write_documents(dropped_out, dropped)
    documents.write_documents(kept_out, kept)
    s["seconds"] = time.perf_counter() - t0
    return s


# Per document of a tokenized file; its tokens are sequence i of the file's `<task>_00000.bin/.idx`.
TOKENS_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("source", pa.string()),
                           ("tokens", pa.int64())])
ENCODE_BATCH = 1024


def tokenize_task(docs_path: str, tokenizer_path: str, eod_token: str, out_dir: str, task: str) -> dict:
    """Encode one documents file into `out_dir/<task>_00000.bin/.idx` (one sequence per document,
    ending in the end-of-document id) and `out_dir/<task>.parquet` (id, url, source, tokens)."""
    t0 = time.perf_counter()
    tok = tokenize.load_tokenizer(tokenizer_path, eod_token)
    eod = tok.token_to_id(eod_token)
    meta = {"id": [], "url": [], "source": [], "tokens": []}
    n_bytes = 0
    # One file of unbounded size: the task's documents in input order, streamed in batches.
    with ShardWriter(out_dir, task, dtype_for_vocab(tok.get_vocab_size()), shard_tokens=1 << 62) as writer:
        batches = documents.open_parquet(docs_path).iter_batches(batch_size=ENCODE_BATCH,
                                                                 columns=["id", "url", "source", "text"])
        for batch in batches:
            rows = batch.to_pylist()
            texts = [r["text"] for r in rows]
            n_bytes += pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0
            for r, ids in zip(rows, tokenize.encode_documents(tok, texts, eod)):
                writer.add_document(np.asarray(ids, dtype=np.int64))
                for key in ("id", "url", "source"):
                    meta[key].append(r[key])
                meta["tokens"].append(len(ids))
    documents.write_table(pa.table(meta, schema=TOKENS_SCHEMA), Path(out_dir) / f"{task}.parquet")
    n = len(meta["id"])
    return {"docs_in": n, "docs_out": n, "dropped": {}, "tokens": sum(meta["tokens"]),
            "bytes_in": n_bytes, "bytes_out": n_bytes, "seconds": time.perf_counter() - t0}


# --- the job ---------------------------------------------------------------------------------

class Pipeline:
    def __init__(self, cfg: DataprepConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir).resolve()
        self.files = input_files(cfg)
        self.names = [task_name(p) for p in self.files]
        self.stats: dict[str, dict] = {}
        self.sources = cfg.mixture.sources_or_crawl()
        self.source_tasks = {  # source -> {task: file} for sources read from files
            name: {task_name(f): f for f in glob_files(src.paths)}
            for name, src in self.sources.items() if src.kind != "crawl"
        }

    def path(self, *parts: str) -> str:
        return str(self.out.joinpath(*parts))

    def run(self) -> dict:
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        log.info("dataprep: %d input files from %s -> %s", len(self.files), self.cfg.ingest.input_dir, self.out)
        self.extract()
        self.deduplicate()
        self.read_sources()
        self.tokenize()
        manifest = self.write_shards()
        summary = {
            "stages": self.stats,
            "sources": self.source_stats,
            "mixture": self.stats_mixture,
            "input_files": [str(p) for p in self.files],
            "documents": manifest["total_documents"],
            "tokens": manifest["total_tokens"],
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(self.out / "stats.json", summary)
        log.info("\n%s", table(self.stats))
        log.info("mixture:\n%s", mixture_table(manifest))
        log.info("%d documents, %d tokens in %d shards: %s (%.1fs)", manifest["total_documents"],
                 manifest["total_tokens"], len(manifest["shards"]), self.out / "manifest.json",
                 summary["seconds"])
        return summary

    def extract(self) -> None:
        """Per input file: ingest, extract, language id, heuristic filters (extract_task); then the
        quality classifier, trained here unless quality.model_path is given, scores and selects."""
        tasks = {
            n: (str(f), self.path("extract", f"{n}.parquet"), self.path("extract", "dropped", f"{n}.parquet"), self.cfg)
            for n, f in zip(self.names, self.files)
        }
        results = TaskRunner("extract", self.out / "extract").run(extract_task, tasks)
        for stage in ("extract", "language", "filter"):
            self.stats[stage] = merge(results[n][stage] for n in self.names)
        languages: dict[str, int] = {}
        for n in self.names:
            for lang, count in results[n]["language"].get("languages", {}).items():
                languages[lang] = languages.get(lang, 0) + count
        self.stats["language"]["languages"] = dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0])))
        self.filtered = {n: self.path("extract", f"{n}.parquet") for n in self.names}
        if self.cfg.quality.enabled:
            self.select_quality()

    def select_quality(self) -> None:
        q = self.cfg.quality
        marker = self.out / "quality" / "_done" / "model.json"
        t0 = time.perf_counter()
        if q.model_path:
            model_path = str(Path(q.model_path).resolve())
            info = {"how": f"loaded {q.model_path}", **quality.load(model_path).info}
        elif marker.is_file():
            info = json.loads(marker.read_text())
            model_path = self.path("quality", "model.safetensors")
        else:
            model_path = self.path("quality", "model.safetensors")
            model = self._train_quality()
            model.save(model_path)
            info = {"how": "trained: reference text vs this job's extracted crawl text", **model.info,
                    "seconds": round(time.perf_counter() - t0, 3)}
            write_json(marker, info)
        log.info("quality classifier: %s (held-out precision %s, recall %s, F1 %s, ROC AUC %s)",
                 info["how"], info.get("precision"), info.get("recall"), info.get("f1"), info.get("roc_auc"))
        tasks = {
            n: (self.filtered[n], model_path, self.path("quality", f"{n}.parquet"),
                self.path("quality", "dropped", f"{n}.parquet"), q)
            for n in self.names
        }
        results = TaskRunner("quality", self.out / "quality").run(quality_task, tasks)
        s = merge(results[n] for n in self.names)
        s["histogram"] = np.sum([results[n]["histogram"] for n in self.names], axis=0).tolist()
        s["histogram_bins"] = np.linspace(0.0, 1.0, len(s["histogram"]) + 1).round(2).tolist()
        s["keep_rate"] = round(s["docs_out"] / s["docs_in"], 4) if s["docs_in"] else None
        s["selection"] = {"mode": q.selection, "alpha": q.alpha, "threshold": q.threshold, "seed": q.seed}
        s["classifier"] = info
        self.stats["quality"] = s
        self.filtered = {n: self.path("quality", f"{n}.parquet") for n in self.names}

    def _train_quality(self) -> quality.QualityModel:
        """Positives: the reference sources, in document-sized chunks. Negatives: the raw extracted
        crawl text of this job (every document that reached the language stage in a wanted
        language, whatever the filters said) and the configured JSON-lines files."""
        q = self.cfg.quality
        positives = list(quality.reference_documents(q.reference_paths, q.chunk_chars))
        wanted = set(self.cfg.langid.languages)
        negatives = []
        for n in self.names:
            for part in (self.path("extract", f"{n}.parquet"), self.path("extract", "dropped", f"{n}.parquet")):
                for d in documents.read_documents(part, ["text", "lang"]):
                    if d["text"] and d["lang"] is not None and (not wanted or d["lang"] in wanted):
                        negatives.append(d["text"])
        negatives += list(quality.jsonl_documents(q.negative_paths))
        features = quality.FeatureSettings(hash_bits=q.hash_bits, ngram=q.ngram)
        return quality.train(positives, negatives, features, c=q.c, heldout=q.heldout, seed=q.seed)

    def deduplicate(self) -> None:
        """Exact, then MinHash-LSH near-duplicate removal as Ray stages over files under dedup/."""
        stages = Deduplicator(self.cfg.dedup, self.out / "dedup")
        self.stats["dedup"] = stages.run(
            docs=self.filtered,  # after the filters and the quality selection
            kept={n: self.path("dedup", f"{n}.parquet") for n in self.names},
            dropped={n: self.path("dedup", "dropped", f"{n}.parquet") for n in self.names},
        )

    # --- mixture sources, tokenizer, tokens, shards ------------------------------------------------

    def _docs_files(self, name: str) -> list[tuple[str, str]]:
        """(task, documents Parquet) of mixture source `name`, in a fixed order."""
        if self.sources[name].kind == "crawl":
            return [(n, self.path("dedup", f"{n}.parquet")) for n in self.names]
        return [(task, self.path("sources", name, f"{task}.parquet")) for task in self.source_tasks[name]]

    def read_sources(self) -> None:
        """Documents of the mixture's non-crawl sources: one task per file."""
        tasks = {}
        for name, src in self.sources.items():
            if src.kind == "crawl":
                continue
            for task, f in self.source_tasks[name].items():
                tasks[f"{name}__{task}"] = (str(f), name, src, self.path("sources", name, f"{task}.parquet"),
                                            self.path("sources", name, "dropped", f"{task}.parquet"))
        results = TaskRunner("sources", self.out / "sources").run(source_task, tasks) if tasks else {}
        self.source_stats = {
            name: merge(r for key, r in results.items() if key.startswith(f"{name}__"))
            for name, src in self.sources.items() if src.kind != "crawl"
        }

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
                sample = {"documents": 0, "bytes": 0}
                tok = tokenize.train_bpe(self._training_texts(sample), t.vocab_size, t.min_frequency,
                                         t.eod_token, t.special_tokens)
                how = (f"trained byte-level BPE, vocab {tok.get_vocab_size()}, on {sample['documents']} "
                       f"documents ({sample['bytes'] / 1e6:.1f} MB) sampled from the mixture's sources")
            tmp = str(tok_path) + ".tmp"
            tok.save(tmp)
            os.replace(tmp, tok_path)
            write_json(marker, {"how": how, "seconds": time.perf_counter() - t0})
        log.info("tokenizer: %s", json.loads(marker.read_text())["how"])
        tasks = {
            f"{name}__{task}": (docs, str(tok_path), t.eod_token, self.path("tokenize", name), task)
            for name in self.sources for task, docs in self._docs_files(name)
        }
        results = TaskRunner("tokenize", self.out / "tokenize").run(tokenize_task, tasks)
        self.stats["tokenize"] = merge(results.values())
        self.stats["tokenize"]["by_source"] = {
            name: sum(r["docs_out"] for key, r in results.items() if key.startswith(f"{name}__"))
            for name in self.sources
        }

    def _training_texts(self, sample: dict):
        """A seeded sample of about tokenizer.sample_bytes of text, each source contributing in
        proportion to its weight (all of it when it holds less). Counts what it yields in `sample`."""
        t = self.cfg.tokenizer
        wsum = sum(s.weight for s in self.sources.values())
        for name, src in self.sources.items():
            files = [path for _, path in self._docs_files(name)]
            held = sum(_text_bytes(f) for f in files)
            budget = t.sample_bytes * src.weight / wsum
            keep = min(1.0, budget / held) if held else 0.0
            taken = 0
            for f in files:
                for d in documents.read_documents(f, ["id", "text"]):
                    if taken >= budget:
                        break
                    # A document is in the sample when its seeded hash falls below `keep`.
                    if keep < 1.0 and zlib.crc32(f"{t.seed}/{name}/{d['id']}".encode()) >= keep * 2**32:
                        continue
                    size = len(d["text"].encode("utf-8"))
                    taken += size
                    sample["documents"] += 1
                    sample["bytes"] += size
                    yield d["text"]

    def write_shards(self) -> dict:
        """The mixture: per-document token counts -> plan (copies, order) -> shards written by
        reading each document's tokens from its tokenized file (never the whole corpus at once)."""
        t, m = self.cfg.tokenizer, self.cfg.mixture
        t0 = time.perf_counter()
        tok = tokenize.load_tokenizer(self.out / "tokenizer.json", t.eod_token)
        vocab = tok.get_vocab_size()
        dtype = dtype_for_vocab(vocab)
        for old in self.out.glob("shard_*"):
            old.unlink()
        # Per source: its tokenized files and each document's metadata; tokens stay on disk,
        # read through memory maps (a bounded number open at once) when a document is written.
        open_shard = functools.lru_cache(maxsize=64)(IndexedShard)
        files, meta, starts, lengths = {}, {}, {}, {}
        for name in self.sources:
            paths, tables = [], []
            for task, _ in self._docs_files(name):
                table_ = pq.read_table(self.path("tokenize", name, f"{task}.parquet"))
                if table_.num_rows:
                    paths.append(self.path("tokenize", name, f"{task}_00000"))
                    tables.append(table_)
            files[name] = paths
            meta[name] = pa.concat_tables(tables) if tables else TOKENS_SCHEMA.empty_table()
            starts[name] = np.cumsum([0] + [tb.num_rows for tb in tables])
            lengths[name] = meta[name].column("tokens").to_numpy()
        total, anchor, epochs = m.size()
        mix = mixture.plan(lengths, {n: s.weight for n, s in self.sources.items()}, total_tokens=total,
                           anchor=anchor, anchor_epochs=epochs, seed=m.seed, tolerance=m.tolerance)
        names = list(self.sources)
        ids = {n: meta[n].column("id").to_pylist() for n in names}
        urls = {n: meta[n].column("url").to_pylist() for n in names}
        files_of = {n: meta[n].column("source").to_pylist() for n in names}
        copies_seen = {n: np.zeros(len(lengths[n]), dtype=np.int64) for n in names}
        lineage: list[dict] = []

        def flush(shard: dict) -> None:  # lineage: which document each sequence of a shard holds
            pq.write_table(pa.Table.from_pylist(lineage, schema=LINEAGE_SCHEMA),
                           self.out / f"{shard['name']}.docs.parquet")
            lineage.clear()

        with ShardWriter(self.out, "shard", dtype, self.cfg.shards.shard_tokens) as writer:
            current, offset = 0, 0
            for s_no, doc in zip(mix.order_source.tolist(), mix.order_doc.tolist()):
                name = names[s_no]
                f = int(np.searchsorted(starts[name], doc, side="right")) - 1
                tokens = open_shard(files[name][f])[doc - int(starts[name][f])]
                shard_no = writer.add_document(tokens)
                if shard_no != current:  # the open shard was closed before this document
                    flush(writer.shards[current])
                    current, offset = shard_no, 0
                lineage.append({"sequence": len(lineage), "offset": offset, "tokens": len(tokens),
                                "mixture_source": name, "id": ids[name][doc], "url": urls[name][doc],
                                "source": files_of[name][doc], "copy": int(copies_seen[name][doc])})
                copies_seen[name][doc] += 1
                offset += len(tokens)
                if len(writer.shards) > shard_no:  # this document filled its shard
                    flush(writer.shards[shard_no])
                    current, offset = shard_no + 1, 0
        if lineage:  # the last shard, finalized by close()
            flush(writer.shards[current])
        shards = writer.shards
        summary = mix.summary()
        for name, entry in summary.items():
            src = self.sources[name]
            listed = ([os.path.relpath(p, self.out) for _, p in self._docs_files(name)] if src.kind == "crawl"
                      else [str(f) for f in self.source_tasks[name].values()])
            summary[name] = {"kind": src.kind, "files": listed, **entry}
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
            # Documents are stored whole, each ending in eod_id; the trainer cuts the stream into
            # windows of its own sequence length, so the shards fit any.
            "sequence_length": None,
            "total_documents": total_docs,
            "total_tokens": total_tokens,
            "mixture": {
                "total_tokens_target": int(round(mix.total_target)),
                "anchor": anchor, "anchor_epochs": epochs, "seed": m.seed, "tolerance": m.tolerance,
                "order": "seeded shuffle of every document copy across sources",
            },
            "sources": summary,
            "shards": shards,
            "config": asdict(self.cfg),
        }
        write_json(self.out / "manifest.json", manifest)
        self.stats_mixture = {"seconds": round(time.perf_counter() - t0, 3), "sources": summary}
        return manifest


def mixture_table(manifest: dict) -> str:
    rows = [("source", "docs", "tokens", "epochs", "target", "achieved")]
    for name, s in manifest["sources"].items():
        rows.append((name, str(s["documents"]), str(s["tokens"]), f"{s['achieved_epochs']:.3f}",
                     f"{s['target_weight']:.2%}", f"{s['achieved_weight']:.2%}"))
    notes = [f"{name}: {s['note']}" for name, s in manifest["sources"].items() if "note" in s]
    return "\n".join([format_rows(rows)] + notes)


LINEAGE_SCHEMA = pa.schema([
    ("sequence", pa.int64()), ("offset", pa.int64()), ("tokens", pa.int64()),
    ("mixture_source", pa.string()), ("id", pa.string()), ("url", pa.string()),
    ("source", pa.string()), ("copy", pa.int64()),
])


def _text_bytes(docs_path: str) -> int:
    """Bytes of the text column of a documents file, from the Parquet footer (no data read)."""
    md = pq.ParquetFile(docs_path).metadata
    col = md.schema.to_arrow_schema().get_field_index("text")
    return sum(md.row_group(i).column(col).total_uncompressed_size for i in range(md.num_row_groups))


def run(cfg: DataprepConfig) -> dict:
    """Run the corpus job on Ray (RAY_ADDRESS / ray.address, else a local Ray)."""
    with ray_session(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory):
        return Pipeline(cfg).run()
