"""Exact and fuzzy deduplication as Ray stages that exchange files, so that no process holds the
whole corpus: each task reads one input file or one partition, and every stage is resumable
(dataprep/tasks.py markers). The algorithms are in dataprep/dedup.py; docs/dedup.md has the
memory model and the measured figures.

  exact_hash    per input file: a digest of each normalized text, partitioned by digest
  exact_groups  per partition: documents of equal digest; all but one survivor are duplicates
  minhash       per input file: signatures of the documents left, and one (band key, doc)
                record per band, partitioned by key
  lsh           per partition: documents sharing a bucket become candidate pairs, verified
                (estimated Jaccard >= threshold) into edges
  clusters      once: connected components of all edges (edges are few); one survivor each
  filter        per input file: the kept documents, and the dropped ones with their reason and
                the survivor's id in duplicate_of

work_dir/
  plan.json                    partitions, bands x rows: a rerun with other settings stops
  exact/<part>/<task>.parquet  digest, doc, id, quality           (by digest % partitions)
  exact/groups/<part>.parquet  exact duplicates: doc, reason, duplicate_of        (by doc)
  signatures/<task>.parquet    doc, id, quality, minhash            (by doc, small row groups)
  bands/<part>/<task>.parquet  key, doc                              (by key % partitions)
  edges/<part>.parquet         a, b: the pairs that became edges
  clusters/clusters.parquet    near duplicates: doc, reason, duplicate_of             (by doc)
  .../_done/<task>.json        completion markers with each task's statistics

A document is known everywhere by its number doc = input file index << 32 | row, 8 bytes;
its id and quality are looked up (by row group) only where a survivor must be chosen.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from dataprep import dedup
from dataprep.config import DedupConfig
from dataprep.documents import write_table
from dataprep.stats import drop, merge, stage_stats
from dataprep.tasks import TaskRunner, write_json

log = logging.getLogger("dataprep")

# Peak bytes of a partition task per record, measured (bench/bench_dedup.py): an lsh record is
# key + doc (16), an argsort index and one reordered copy (16), and what reading Parquet leaves
# in the allocator; an exact record is two digest words, doc, quality and the id string plus a
# sort's copy.
BAND_RECORD_BYTES = 48
EXACT_RECORD_BYTES = 160
# Signature files are read back by row group for the few documents in candidate pairs.
SIG_ROW_GROUP = 1024
DECISION_ROW_GROUP = 65536
# Documents signed per batch: bounds the signer's temporaries (about 30 bytes a character).
SIGN_BATCH = 1024
# Band records read, or candidate pairs compared, per step of a partition task.
READ_BATCH = 8192

EXACT_SCHEMA = pa.schema([("h0", pa.uint64()), ("h1", pa.uint64()), ("doc", pa.uint64()),
                          ("id", pa.string()), ("quality", pa.float64())])
DECISION_SCHEMA = pa.schema([("doc", pa.uint64()), ("reason", pa.string()), ("duplicate_of", pa.string())])


def signature_schema(num_perm: int) -> pa.Schema:
    return pa.schema([("doc", pa.uint64()), ("id", pa.string()), ("quality", pa.float64()),
                      ("minhash", pa.list_(pa.uint32(), num_perm))])


@dataclass(frozen=True)
class Plan:
    docs: int
    partitions: int
    bands: int
    rows: int


def doc_numbers(file_index: int, first_row: int, n: int) -> np.ndarray:
    return (np.uint64(file_index) << np.uint64(32)) | np.arange(first_row, first_row + n, dtype=np.uint64)


# --- files -------------------------------------------------------------------------------------

def _write_partitioned(table: pa.Table, part: np.ndarray, paths: list[str]) -> None:
    """Row i of table to paths[part[i]], keeping row order; every path is written (maybe empty)."""
    order = np.argsort(part, kind="stable")
    counts = np.bincount(part, minlength=len(paths))
    table = table.take(order)
    start = 0
    for path, count in zip(paths, counts.tolist()):
        write_table(table.slice(start, count), path)
        start += count


def _doc_batches(path: str, quality_column: str | None, batch_size: int = SIGN_BATCH):
    """(first row, ids as strings, quality as float64 or nulls, texts) per batch of a document file."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    for required in ("id", "text"):
        if required not in names:
            raise ValueError(f"{path}: no column {required!r} (columns: {names})")
    has_quality = quality_column in names
    first = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=["id", "text"] + [quality_column] * has_quality):
        quality = (pc.cast(batch.column(quality_column), pa.float64()) if has_quality
                   else pa.nulls(len(batch), pa.float64()))
        yield first, pc.cast(batch.column("id"), pa.string()), quality, batch.column("text").to_pylist()
        first += len(batch)


def _decisions_for_file(paths: list[str], file_index: int) -> pa.Table:
    """The decisions (doc, reason, duplicate_of) about one input file's documents, by doc: files
    are sorted by doc, so row-group statistics skip the other files' rows."""
    if not paths:
        return DECISION_SCHEMA.empty_table()
    lo, hi = doc_numbers(file_index, 0, 1)[0], doc_numbers(file_index + 1, 0, 1)[0]
    doc = pc.field("doc")
    table = pads.dataset(paths, format="parquet", schema=DECISION_SCHEMA).to_table(
        filter=(doc >= pa.scalar(lo, pa.uint64())) & (doc < pa.scalar(hi, pa.uint64())))
    return table.sort_by("doc")


def _row_groups(pf: pq.ParquetFile, docs: np.ndarray) -> np.ndarray:
    """The row group of each of `docs` in a signature file (sorted by doc, its first column)."""
    meta = pf.metadata
    mins = np.array([meta.row_group(i).column(0).statistics.min for i in range(meta.num_row_groups)], dtype=np.uint64)
    return np.searchsorted(mins, docs, side="right") - 1


def lookup(sig_paths: list[str], docs: np.ndarray, columns: list[str]) -> pa.Table:
    """`columns` of the signature files for sorted unique `docs`, in the same order, reading only
    the row groups that hold them."""
    files = (docs >> np.uint64(32)).astype(np.int64)
    parts = []
    for f in np.unique(files):
        wanted = docs[files == f]
        pf = pq.ParquetFile(sig_paths[f])
        table = pf.read_row_groups(np.unique(_row_groups(pf, wanted)).tolist(), columns=["doc"] + columns,
                                   use_threads=False)
        parts.append(table.take(np.searchsorted(table["doc"].to_numpy(), wanted)))
    return pa.concat_tables(parts)


# --- tasks (run in Ray workers) ----------------------------------------------------------------

def exact_hash_task(docs_path: str, file_index: int, outs: list[str], quality_column: str | None) -> dict:
    t0 = time.perf_counter()
    parts = []
    for first, ids, quality, texts in _doc_batches(docs_path, quality_column):
        digests = dedup.text_digests(texts)
        parts.append(pa.table({"h0": digests[:, 0], "h1": digests[:, 1],
                               "doc": doc_numbers(file_index, first, len(texts)), "id": ids, "quality": quality},
                              schema=EXACT_SCHEMA))
    table = pa.concat_tables(parts) if parts else EXACT_SCHEMA.empty_table()
    _write_partitioned(table, (table["h0"].to_numpy() % len(outs)).astype(np.int64), outs)
    return {"docs_in": len(table), "seconds": time.perf_counter() - t0}


def _decisions(docs: np.ndarray, reason: str, duplicate_of: pa.Array) -> pa.Table:
    return pa.table({"doc": docs, "reason": pa.array([reason] * len(docs), pa.string()),
                     "duplicate_of": duplicate_of}, schema=DECISION_SCHEMA)


def exact_groups_task(in_paths: list[str], out: str) -> dict:
    t0 = time.perf_counter()
    table = pa.concat_tables(pq.read_table(p) for p in in_paths)
    order = np.lexsort((table["h1"].to_numpy(), table["h0"].to_numpy()))
    h0, h1 = table["h0"].to_numpy()[order], table["h1"].to_numpy()[order]
    same = (h0[1:] == h0[:-1]) & (h1[1:] == h1[:-1])
    grouped = np.zeros(len(order), dtype=bool)
    grouped[1:] = same
    grouped[:-1] |= same
    group = table.take(order[grouped])  # only documents with an equal twin
    survivor = dedup.choose_survivors({"h0": group["h0"].to_numpy(), "h1": group["h1"].to_numpy()},
                                      group["id"], group["quality"])
    dup = np.flatnonzero(survivor != np.arange(len(group)))
    decisions = _decisions(group["doc"].to_numpy()[dup], "exact_duplicate", group["id"].take(survivor[dup]))
    write_table(decisions.sort_by("doc"), out, DECISION_ROW_GROUP)
    return {"docs_in": len(table), "exact_duplicates": len(dup), "seconds": time.perf_counter() - t0}


def signature_task(docs_path: str, file_index: int, exact_paths: list[str], sig_out: str,
                   band_outs: list[str], cfg: DedupConfig, plan: Plan) -> dict:
    t0 = time.perf_counter()
    signer = dedup.MinHasher(cfg.num_perm, cfg.seed, cfg.ngram, cfg.hashfunc)
    skip = _decisions_for_file(exact_paths, file_index)["doc"].to_numpy()
    schema = signature_schema(cfg.num_perm)
    parts, n_in = [], 0
    for first, ids, quality, texts in _doc_batches(docs_path, cfg.quality_column):
        n_in += len(texts)
        numbers = doc_numbers(file_index, first, len(texts))
        keep = np.flatnonzero(~np.isin(numbers, skip))
        sig = signer([texts[i] for i in keep])
        parts.append(pa.table({
            "doc": numbers[keep], "id": ids.take(keep), "quality": quality.take(keep),
            "minhash": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), cfg.num_perm),
        }, schema=schema))
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    write_table(table, sig_out, SIG_ROW_GROUP)
    doc = table["doc"].to_numpy()
    sig = table["minhash"].combine_chunks().flatten().to_numpy().reshape(len(doc), cfg.num_perm)
    keys = dedup.band_keys(sig, plan.bands, plan.rows).ravel()  # document-major: docs stay sorted
    records = pa.table({"key": keys, "doc": np.repeat(doc, plan.bands)})
    _write_partitioned(records, (keys % np.uint64(plan.partitions)).astype(np.int64), band_outs)
    return {"docs_in": n_in, "signed": len(doc), "seconds": time.perf_counter() - t0}


def _signatures(sig_paths: list[str], docs: np.ndarray, num_perm: int) -> np.ndarray:
    """(len(docs), num_perm) signatures of sorted unique docs, read one row group at a time."""
    sig = np.empty((len(docs), num_perm), dtype=np.uint32)
    files = (docs >> np.uint64(32)).astype(np.int64)
    for f in np.unique(files):
        rows = np.flatnonzero(files == f)
        pf = pq.ParquetFile(sig_paths[f])
        group_of = _row_groups(pf, docs[rows])
        for g in np.unique(group_of):
            table = pf.read_row_group(int(g), columns=["doc", "minhash"], use_threads=False)
            wanted = rows[group_of == g]
            values = table["minhash"].combine_chunks().flatten().to_numpy().reshape(len(table), num_perm)
            sig[wanted] = values[np.searchsorted(table["doc"].to_numpy(), docs[wanted])]
    return sig


def _verified(pairs: np.ndarray, sig_paths: list[str], cfg: DedupConfig) -> np.ndarray:
    """For each pair, whether its signatures estimate Jaccard >= threshold. The signatures of a
    chunk of pairs are read together (each row group once); a chunk's signatures (2 documents a
    pair, 4 x num_perm bytes each) take at most half the memory budget, the other half being
    left to what reading them costs."""
    per_chunk = max(READ_BATCH, int(cfg.memory_budget_mb * 2**20) // (4 * 4 * cfg.num_perm))
    keep = np.empty(len(pairs), dtype=bool)
    for i in range(0, len(pairs), per_chunk):
        chunk = pairs[i:i + per_chunk]
        docs = np.unique(chunk)
        sig = _signatures(sig_paths, docs, cfg.num_perm)
        a, b = np.searchsorted(docs, chunk[:, 0]), np.searchsorted(docs, chunk[:, 1])
        for j in range(0, len(chunk), READ_BATCH):  # the compared rows' copies stay small
            keep[i + j:i + j + READ_BATCH] = dedup.estimated_jaccard(
                sig[a[j:j + READ_BATCH]], sig[b[j:j + READ_BATCH]]) >= cfg.threshold
    return keep


def candidates_task(band_paths: list[str], sig_paths: list[str], out: str, cfg: DedupConfig) -> dict:
    t0 = time.perf_counter()
    n = sum(pq.ParquetFile(p).metadata.num_rows for p in band_paths)
    # Filled batch by batch, so that few Arrow buffers exist next to the arrays.
    keys, docs = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64)
    at = 0
    for path in band_paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH, use_threads=False):
            keys[at:at + len(batch)] = batch.column("key").to_numpy()
            docs[at:at + len(batch)] = batch.column("doc").to_numpy()
            at += len(batch)
    pairs = dedup.bucket_pairs(keys, docs)
    del keys, docs
    candidates = len(pairs)
    if cfg.verify and candidates:
        pairs = pairs[_verified(pairs, sig_paths, cfg)]
    write_table(pa.table({"a": pairs[:, 0], "b": pairs[:, 1]}), out)
    return {"records": n, "candidate_pairs": candidates, "verified_pairs": len(pairs),
            "seconds": time.perf_counter() - t0}


def clusters_task(edge_paths: list[str], sig_paths: list[str], out: str) -> dict:
    t0 = time.perf_counter()
    tables = [pq.read_table(p) for p in edge_paths]
    # A pair sharing buckets of several partitions was found by each: count it once.
    edges = np.unique(np.stack([np.concatenate([t[c].to_numpy() for t in tables]) for c in "ab"], axis=1), axis=0)
    clusters = largest = linked = 0
    decisions = DECISION_SCHEMA.empty_table()
    if len(edges):
        nodes, labels = dedup.connected_components(edges[:, 0], edges[:, 1])
        meta = lookup(sig_paths, nodes, ["id", "quality"])
        survivor = dedup.choose_survivors({"label": labels}, meta["id"], meta["quality"])
        dup = np.flatnonzero(survivor != np.arange(len(nodes)))
        decisions = _decisions(nodes[dup], "near_duplicate", meta["id"].take(survivor[dup]))  # nodes are sorted
        sizes = np.bincount(labels)
        clusters, largest, linked = len(sizes), int(sizes.max()), len(nodes)
    write_table(decisions, out, DECISION_ROW_GROUP)
    return {"docs_in": linked, "edges": len(edges), "near_duplicates": len(decisions), "clusters": clusters,
            "largest_cluster": largest, "seconds": time.perf_counter() - t0}


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.schema.names:
        return table.set_column(table.schema.get_field_index(name), pa.field(name, pa.string()), values)
    return table.append_column(pa.field(name, pa.string()), values)


def filter_task(docs_path: str, file_index: int, decision_paths: list[str], kept_out: str, dropped_out: str) -> dict:
    """Split one input file into kept and dropped documents, every column kept as it was."""
    t0 = time.perf_counter()
    table = pq.read_table(docs_path)
    decisions = _decisions_for_file(decision_paths, file_index)
    rows = (decisions["doc"].to_numpy() & np.uint64(0xFFFFFFFF)).astype(np.int64)
    dropped_mask = np.zeros(len(table), dtype=bool)
    dropped_mask[rows] = True
    kept = table.filter(pa.array(~dropped_mask))
    dropped = table.take(rows)
    dropped = _with_column(dropped, "drop_reason", decisions["reason"])
    dropped = _with_column(dropped, "duplicate_of", decisions["duplicate_of"])
    write_table(dropped, dropped_out)
    write_table(kept, kept_out)
    s = stage_stats()
    s["docs_in"], s["docs_out"] = len(table), len(kept)
    for reason in decisions["reason"].to_pylist():
        drop(s, reason)
    s["bytes_in"] = int(pc.sum(pc.binary_length(table["text"])).as_py() or 0)
    s["bytes_out"] = int(pc.sum(pc.binary_length(kept["text"])).as_py() or 0)
    s["seconds"] = time.perf_counter() - t0
    return s


# --- the stages --------------------------------------------------------------------------------

class Deduplicator:
    """Exact, then fuzzy deduplication of Parquet document files (columns id, text, and
    optionally cfg.quality_column), run as Ray stages over files in work_dir."""

    def __init__(self, cfg: DedupConfig, work_dir: str | Path):
        if cfg.hashfunc not in dedup.SHINGLE_HASHES:
            raise ValueError(f"dedup.hashfunc={cfg.hashfunc!r}: choose one of {sorted(dedup.SHINGLE_HASHES)}")
        if (cfg.bands is None) != (cfg.rows is None):
            raise ValueError("dedup.bands and dedup.rows go together: set both, or neither")
        if cfg.bands is not None and cfg.bands * cfg.rows > cfg.num_perm:
            raise ValueError(f"dedup.bands * dedup.rows = {cfg.bands * cfg.rows} > dedup.num_perm = {cfg.num_perm}")
        if not 0 < cfg.threshold < 1:
            raise ValueError(f"dedup.threshold={cfg.threshold}: must be in (0, 1)")
        self.cfg = cfg
        self.work = Path(work_dir)
        self.bands, self.rows = ((cfg.bands, cfg.rows) if cfg.bands is not None else
                                 dedup.lsh_params(cfg.threshold, cfg.num_perm, (cfg.fp_weight, cfg.fn_weight)))

    def plan(self, doc_paths: list[str]) -> Plan:
        """Partitions so that a partition task's records fit memory_budget_mb; the plan is
        stored, and a rerun over the same work_dir with other settings stops instead of mixing."""
        docs = sum(pq.ParquetFile(p).metadata.num_rows for p in doc_paths)
        per_doc = max(self.bands * BAND_RECORD_BYTES, EXACT_RECORD_BYTES)
        partitions = self.cfg.partitions or max(1, math.ceil(docs * per_doc / (self.cfg.memory_budget_mb * 2**20)))
        plan = Plan(docs=docs, partitions=partitions, bands=self.bands, rows=self.rows)
        settings = {**asdict(plan), **asdict(self.cfg)}
        stored = self.work / "plan.json"
        if stored.is_file():
            before = json.loads(stored.read_text())
            changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
            if changed:
                raise ValueError(f"{self.work} was made with other settings ({', '.join(changed)}): "
                                 f"delete it, or run with the settings in {stored}")
        else:
            write_json(stored, settings)
        return plan

    def run(self, docs: dict[str, str], kept: dict[str, str], dropped: dict[str, str]) -> dict:
        """Deduplicate the files docs[task] into kept[task] and dropped[task]; returns the stats."""
        cfg, w = self.cfg, self.work
        names = list(docs)
        plan = self.plan([docs[n] for n in names])
        parts = [f"{p:05d}" for p in range(plan.partitions)]
        log.info("dedup: %d documents in %d files, %d partitions, LSH %d bands x %d rows",
                 plan.docs, len(names), plan.partitions, plan.bands, plan.rows)
        path = lambda *p: str(w.joinpath(*p))
        results: dict[str, dict[str, dict]] = {}
        wall: dict[str, float] = {}

        def stage(name: str, stage_dir: Path, fn, tasks: dict[str, tuple]) -> dict[str, dict]:
            t0 = time.perf_counter()
            results[name] = TaskRunner(name, stage_dir).run(fn, tasks)
            wall[name] = round(time.perf_counter() - t0, 3)
            return results[name]

        decision_paths: list[str] = []
        exact: dict[str, dict] = {}
        near: dict = {}
        if cfg.exact:
            stage("exact_hash", w / "exact", exact_hash_task, {
                n: (docs[n], i, [path("exact", p, f"{n}.parquet") for p in parts], cfg.quality_column)
                for i, n in enumerate(names)})
            groups = [path("exact", "groups", f"{p}.parquet") for p in parts]
            exact = stage("exact_groups", w / "exact" / "groups", exact_groups_task, {
                p: ([path("exact", p, f"{n}.parquet") for n in names], out) for p, out in zip(parts, groups)})
            decision_paths += groups
        if cfg.fuzzy:
            sig_paths = [path("signatures", f"{n}.parquet") for n in names]
            stage("minhash", w / "signatures", signature_task, {
                n: (docs[n], i, list(decision_paths), sig_paths[i],
                    [path("bands", p, f"{n}.parquet") for p in parts], cfg, plan)
                for i, n in enumerate(names)})
            edges = [path("edges", f"{p}.parquet") for p in parts]
            lsh = stage("lsh", w / "edges", candidates_task, {
                p: ([path("bands", p, f"{n}.parquet") for n in names], sig_paths, out, cfg)
                for p, out in zip(parts, edges)})
            near = stage("clusters", w / "clusters", clusters_task, {
                "clusters": (edges, sig_paths, path("clusters", "clusters.parquet"))})["clusters"]
            decision_paths.append(path("clusters", "clusters.parquet"))
        filtered = stage("filter", w, filter_task, {
            n: (docs[n], i, list(decision_paths), kept[n], dropped[n]) for i, n in enumerate(names)})

        s = merge(filtered[n] for n in names)
        s["exact_duplicates"] = sum(r["exact_duplicates"] for r in exact.values())
        s["near_duplicates"] = near.get("near_duplicates", 0)
        s["clusters"] = near.get("clusters", 0)
        s["largest_cluster"] = near.get("largest_cluster", 0)
        if cfg.fuzzy:
            # Summed over partitions: a pair sharing buckets in k partitions counts k times.
            s["candidate_pairs"] = sum(r["candidate_pairs"] for r in lsh.values())
            s["verified_pairs"] = sum(r["verified_pairs"] for r in lsh.values())
            s["edges"] = near["edges"]
        s.update(partitions=plan.partitions, bands=plan.bands, rows=plan.rows, stage_wall_seconds=wall)
        # Like the other stages: seconds is the tasks' time summed (this run's and earlier runs').
        s["seconds"] = round(sum(r["seconds"] for stage_results in results.values() for r in stage_results.values()), 3)
        log.info("dedup: %d in, %d exact and %d near duplicates in %d clusters (largest %d), %d out",
                 s["docs_in"], s["exact_duplicates"], s["near_duplicates"], s["clusters"],
                 s["largest_cluster"], s["docs_out"])
        return s
