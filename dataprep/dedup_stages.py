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
  components    connected components of the edges: per node partition, rounds of the
                large-star and small-star steps until the edges are one star per component
  clusters      per node partition: the stars are the clusters; one survivor each
  filter        per input file: the kept documents, and the dropped ones with their reason and
                the survivor's id in duplicate_of

work_dir/
  plan.json                    partitions, bands x rows: a rerun with other settings stops
  exact/<part>/<task>.parquet  digest, doc, id, quality           (by digest % partitions)
  exact/groups/<part>.parquet  exact duplicates: doc, reason, duplicate_of        (by doc)
  signatures/<task>.parquet    doc, id, quality, minhash            (by doc, small row groups)
  bands/<part>/<task>.parquet  key, doc                              (by key % partitions)
  edges/<part>.parquet         a, b: the pairs that became edges
  components/<step>/<task>/<node part>.parquet
                               node, nbr: a step's edges, for the next step (by fmix64(node) % P')
  clusters/<node part>.parquet near duplicates: doc, reason, duplicate_of             (by doc)
  .../_done/<task>.json        completion markers with each task's statistics

A document is known everywhere by its number doc = input file index << 32 | row, 8 bytes;
its id and quality are looked up (by row group) only where a survivor must be chosen.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from dataprep import dedup
from dataprep.config import DedupConfig
from dataprep.documents import TableWriter, open_parquet, write_table
from dataprep.stats import drop, merge, stage_stats
from dataprep.tasks import TaskRunner, write_json

log = logging.getLogger("dataprep")

# Peak bytes of a partition task per record, measured (bench/bench_dedup.py): an lsh record is
# key + doc (16), an argsort index and one reordered copy (16), and what reading Parquet leaves
# in the allocator; an exact record is two digest words, doc, quality and the id string plus a
# sort's copy.
BAND_RECORD_BYTES = 48
EXACT_RECORD_BYTES = 160
# Peak bytes of a connected-components step task per edge of its partition, measured
# (bench/bench_dedup.py): a large-star task holds each edge from both ends (two 16-byte records,
# sorted: 46 bytes a record), a small-star task once, but writes up to four records for it.
COMPONENT_EDGE_BYTES = 128
# The alternating algorithm needs O(log^2 n) rounds for n nodes (Kiveris et al. 2014); far fewer
# in practice. More than this means a bug, not a big graph.
MAX_COMPONENT_ROUNDS = 100
# Signature files are read back by row group for the few documents in candidate pairs.
SIG_ROW_GROUP = 1024
DECISION_ROW_GROUP = 65536
# Documents read per batch by the per-file tasks.
DOC_BATCH = 1024
# Band records read, or candidate pairs compared, per step of a partition task.
READ_BATCH = 8192

BAND_SCHEMA = pa.schema([("key", pa.uint64()), ("doc", pa.uint64())])
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

class PartitionedWriter:
    """Tables whose rows go to files by partition (row i of a table to paths[part[i]], in order),
    buffered: when the buffers hold `buffer_bytes` in all, each partition's rows are written as one
    row group. Memory stays bounded whatever the input's size, and row groups stay large. Every
    path is written, maybe empty; atomically, as TableWriter."""

    def __init__(self, paths: list[str], schema: pa.Schema, buffer_bytes: float = math.inf):
        self._files = ExitStack()
        self._writers = [TableWriter(p, schema, use_dictionary=False) for p in paths]
        self._buffers: list[list[pa.Table]] = [[] for _ in paths]
        self._buffered, self._limit = 0, buffer_bytes

    def __enter__(self) -> "PartitionedWriter":
        for writer in self._writers:
            self._files.enter_context(writer)
        return self

    def write(self, table: pa.Table, part: np.ndarray) -> None:
        order = np.argsort(part, kind="stable")
        counts = np.bincount(part, minlength=len(self._writers))
        table = table.take(order)
        start = 0
        for buffer, count in zip(self._buffers, counts.tolist()):
            if count:
                buffer.append(table.slice(start, count))
            start += count
        self._buffered += table.nbytes
        if self._buffered >= self._limit:
            self._flush()

    def _flush(self) -> None:
        for writer, buffer in zip(self._writers, self._buffers):
            if buffer:
                writer.write(pa.concat_tables(buffer))
                buffer.clear()
        self._buffered = 0

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self._flush()
        self._files.__exit__(kind, error, traceback)


def write_buffer_bytes(cfg: DedupConfig) -> int:
    """What a per-file task buffers before writing: a quarter of the memory budget."""
    return int(cfg.memory_budget_mb * 2**20 / 4)


def _doc_batches(path: str, quality_column: str | None, batch_size: int = DOC_BATCH):
    """(first row, ids as strings, quality as float64 or nulls, texts) per batch of a document file."""
    pf = open_parquet(path)
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
        pf = open_parquet(sig_paths[f])
        table = pf.read_row_groups(np.unique(_row_groups(pf, wanted)).tolist(), columns=["doc"] + columns,
                                   use_threads=False)
        parts.append(table.take(np.searchsorted(table["doc"].to_numpy(), wanted)))
    return pa.concat_tables(parts)


# --- tasks (run in Ray workers) ----------------------------------------------------------------

def exact_hash_task(docs_path: str, file_index: int, outs: list[str], quality_column: str | None,
                    buffer_bytes: int) -> dict:
    t0 = time.perf_counter()
    n = 0
    with PartitionedWriter(outs, EXACT_SCHEMA, buffer_bytes) as out:
        for first, ids, quality, texts in _doc_batches(docs_path, quality_column):
            digests = dedup.text_digests(texts)
            out.write(pa.table({"h0": digests[:, 0], "h1": digests[:, 1],
                                "doc": doc_numbers(file_index, first, len(texts)), "id": ids, "quality": quality},
                               schema=EXACT_SCHEMA), (digests[:, 0] % len(outs)).astype(np.int64))
            n += len(texts)
    return {"docs_in": n, "seconds": time.perf_counter() - t0}


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
    write_table(decisions.sort_by("doc"), out, DECISION_ROW_GROUP, use_dictionary=False)
    return {"docs_in": len(table), "exact_duplicates": len(dup), "seconds": time.perf_counter() - t0}


def signature_task(docs_path: str, file_index: int, exact_paths: list[str], sig_out: str,
                   band_outs: list[str], cfg: DedupConfig, plan: Plan) -> dict:
    t0 = time.perf_counter()
    signer = dedup.MinHasher(cfg.num_perm, cfg.seed, cfg.ngram, cfg.hashfunc)
    skip = _decisions_for_file(exact_paths, file_index)["doc"].to_numpy()
    schema = signature_schema(cfg.num_perm)
    n_in = n_signed = 0
    with TableWriter(sig_out, schema, SIG_ROW_GROUP, use_dictionary=False) as signatures, \
            PartitionedWriter(band_outs, BAND_SCHEMA, write_buffer_bytes(cfg)) as bands:
        for first, ids, quality, texts in _doc_batches(docs_path, cfg.quality_column):
            n_in += len(texts)
            numbers = doc_numbers(file_index, first, len(texts))
            keep = np.flatnonzero(~np.isin(numbers, skip))
            sig = signer([texts[i] for i in keep])  # it bounds its temporaries (MinHasher.CHUNK)
            signatures.write(pa.table({
                "doc": numbers[keep], "id": ids.take(keep), "quality": quality.take(keep),
                "minhash": pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), cfg.num_perm),
            }, schema=schema))
            keys = dedup.band_keys(sig, plan.bands, plan.rows).ravel()  # document-major
            bands.write(pa.table({"key": keys, "doc": np.repeat(numbers[keep], plan.bands)}, schema=BAND_SCHEMA),
                        (keys % np.uint64(plan.partitions)).astype(np.int64))
            n_signed += len(keep)
    return {"docs_in": n_in, "signed": n_signed, "seconds": time.perf_counter() - t0}


def _signatures(sig_paths: list[str], docs: np.ndarray, num_perm: int) -> np.ndarray:
    """(len(docs), num_perm) signatures of sorted unique docs, read one row group at a time."""
    sig = np.empty((len(docs), num_perm), dtype=np.uint32)
    files = (docs >> np.uint64(32)).astype(np.int64)
    for f in np.unique(files):
        rows = np.flatnonzero(files == f)
        pf = open_parquet(sig_paths[f])
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


def _read_columns(paths: list[str], names: tuple[str, ...]) -> list[np.ndarray]:
    """The uint64 columns `names` of Parquet files, concatenated. Filled batch by batch into arrays
    of the final size, so that few Arrow buffers exist next to them."""
    files = [open_parquet(p) for p in paths]
    n = sum(f.metadata.num_rows for f in files)
    columns, at = [np.empty(n, dtype=np.uint64) for _ in names], 0
    for f in files:
        for batch in f.iter_batches(batch_size=READ_BATCH, columns=list(names), use_threads=False):
            for column, name in zip(columns, names):
                column[at:at + len(batch)] = batch.column(name).to_numpy()
            at += len(batch)
    return columns


def candidates_task(band_paths: list[str], sig_paths: list[str], out: str, cfg: DedupConfig) -> dict:
    t0 = time.perf_counter()
    keys, docs = _read_columns(band_paths, ("key", "doc"))
    n = len(keys)
    pairs = dedup.bucket_pairs(keys, docs)
    del keys, docs
    candidates = len(pairs)
    if cfg.verify and candidates:
        pairs = pairs[_verified(pairs, sig_paths, cfg)]
    write_table(pa.table({"a": pairs[:, 0], "b": pairs[:, 1]}), out, use_dictionary=False)
    return {"records": n, "candidate_pairs": candidates, "verified_pairs": len(pairs),
            "seconds": time.perf_counter() - t0}


# Connected components of the edges, over node partitions: the alternating large-star /
# small-star algorithm (dedup.large_star, dedup.small_star), each step one stage whose task d
# reads the records (node, nbr) of the nodes of partition d (fmix64(node) % partitions) and
# writes the new edges, split by partition for the next step. No task holds more than one
# partition's records; the rounds end when a large-star and the small-star after it change
# nothing, and the edges are then stars: each component's smallest node joined to every other.

def _write_records(node: np.ndarray, nbr: np.ndarray, outs: list[str]) -> None:
    """Records (node, nbr), each to the file of its node's partition."""
    table = pa.table({"node": node, "nbr": nbr})
    with PartitionedWriter(outs, table.schema) as out:
        out.write(table, (dedup.fmix64(node) % np.uint64(len(outs))).astype(np.int64))


def _both_ways(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([a, b]), np.concatenate([b, a])


def scatter_edges_task(edge_path: str, outs: list[str]) -> dict:
    """The first step: one lsh partition's edges, as records from both ends."""
    t0 = time.perf_counter()
    a, b = _read_columns([edge_path], ("a", "b"))
    _write_records(*_both_ways(a, b), outs)
    return {"edges": len(a), "seconds": time.perf_counter() - t0}


STAR_STEPS = {"large-star": dedup.large_star, "small-star": dedup.small_star}


def star_task(step: str, in_paths: list[str], outs: list[str]) -> dict:
    """One large-star or small-star step over the records of one node partition."""
    t0 = time.perf_counter()
    node, nbr = _read_columns(in_paths, ("node", "nbr"))
    records = len(node)
    v, m, changed = STAR_STEPS[step](node, nbr)
    del node, nbr
    # The small-star reads each edge from its larger end only, the large-star from both.
    _write_records(*((v, m) if step == "large-star" else _both_ways(v, m)), outs)
    # A large-star writes one edge for each distinct edge whose smaller end is in this partition:
    # summed over the partitions, the distinct edges it read.
    return {"records": records, "edges_out": len(v), "changed": changed, "seconds": time.perf_counter() - t0}


def clusters_task(in_paths: list[str], sig_paths: list[str], out: str) -> dict:
    """After the last step: the stars of this partition's centres (a component's smallest node,
    the end of its star's edges that is smaller) are the clusters; one survivor each."""
    t0 = time.perf_counter()
    node, nbr = _read_columns(in_paths, ("node", "nbr"))
    centre = node < nbr
    member, label = nbr[centre], node[centre]  # each member is in one star: the edges are stars
    del node, nbr, centre
    centres, leaves = np.unique(label, return_counts=True)
    nodes, labels = np.concatenate([centres, member]), np.concatenate([centres, label])
    order = np.argsort(nodes)
    nodes, labels = nodes[order], labels[order]
    decisions = DECISION_SCHEMA.empty_table()
    if len(nodes):
        meta = lookup(sig_paths, nodes, ["id", "quality"])
        survivor = dedup.choose_survivors({"label": labels}, meta["id"], meta["quality"])
        dup = np.flatnonzero(survivor != np.arange(len(nodes)))
        decisions = _decisions(nodes[dup], "near_duplicate", meta["id"].take(survivor[dup]))  # nodes are sorted
    write_table(decisions, out, DECISION_ROW_GROUP, use_dictionary=False)
    return {"docs_in": len(nodes), "near_duplicates": len(decisions), "clusters": len(centres),
            "largest_cluster": int(leaves.max(initial=-1)) + 1, "seconds": time.perf_counter() - t0}


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.schema.names:
        return table.set_column(table.schema.get_field_index(name), pa.field(name, pa.string()), values)
    return table.append_column(pa.field(name, pa.string()), values)


def filter_task(docs_path: str, file_index: int, decision_paths: list[str], kept_out: str, dropped_out: str) -> dict:
    """Split one input file into kept and dropped documents, every column kept as it was; a batch
    of documents at a time."""
    t0 = time.perf_counter()
    decisions = _decisions_for_file(decision_paths, file_index)
    rows = (decisions["doc"].to_numpy() & np.uint64(0xFFFFFFFF)).astype(np.int64)  # sorted
    pf = open_parquet(docs_path)
    s = stage_stats()
    for reason in decisions["reason"].to_pylist():
        drop(s, reason)
    dropped_schema = _with_column(_with_column(pf.schema_arrow.empty_table(), "drop_reason", pa.array([], pa.string())),
                                  "duplicate_of", pa.array([], pa.string())).schema
    first = 0
    with TableWriter(kept_out, pf.schema_arrow, use_dictionary=False) as kept, \
            TableWriter(dropped_out, dropped_schema, use_dictionary=False) as dropped:
        for batch in pf.iter_batches(batch_size=DOC_BATCH):
            table = pa.Table.from_batches([batch], pf.schema_arrow)
            lo, hi = np.searchsorted(rows, [first, first + len(table)])
            here = rows[lo:hi] - first
            mask = np.zeros(len(table), dtype=bool)
            mask[here] = True
            kept_table = table.filter(pa.array(~mask))
            gone = _with_column(table.take(here), "drop_reason", decisions["reason"].slice(lo, hi - lo))
            dropped.write(_with_column(gone, "duplicate_of", decisions["duplicate_of"].slice(lo, hi - lo)))
            kept.write(kept_table)
            s["bytes_in"] += int(pc.sum(pc.binary_length(table["text"])).as_py() or 0)
            s["bytes_out"] += int(pc.sum(pc.binary_length(kept_table["text"])).as_py() or 0)
            first += len(table)
    s["docs_in"], s["docs_out"] = first, kept.rows
    s["seconds"] = time.perf_counter() - t0
    return s


# --- the stages --------------------------------------------------------------------------------

def connected_components(edges: dict[str, str], work: Path, partitions: int, stage=None) -> dict:
    """Runs the connected-components steps over edge files (columns a, b; task name -> path) in
    `partitions` node partitions, each step's files and markers under work/<step>/. stage(name,
    stage_dir, fn, tasks) runs a stage (default: a TaskRunner). Returns the partitions, the number
    of rounds, the number of distinct edges, and last_step(partition): the files of the final
    stars' records (node, nbr) of that partition's nodes, each star's edges from both ends."""
    stage = stage or (lambda name, stage_dir, fn, tasks: TaskRunner(name, stage_dir).run(fn, tasks))
    parts = [f"{p:05d}" for p in range(partitions)]
    step_dir = lambda k: Path(work) / f"{k:03d}"
    outs = lambda k, src: [str(step_dir(k) / src / f"{d}.parquet") for d in parts]
    ins = lambda k, sources, d: [str(step_dir(k) / src / f"{d}.parquet") for src in sources]
    stage("components: edges", step_dir(0), scatter_edges_task, {src: (path, outs(0, src)) for src, path in edges.items()})
    sources, k, distinct = list(edges), 0, 0
    for rnd in range(1, MAX_COMPONENT_ROUNDS + 1):
        changed = 0
        for step in STAR_STEPS:
            k += 1
            done = stage(f"components: round {rnd} {step}", step_dir(k), star_task,
                         {d: (step, ins(k - 1, sources, d), outs(k, d)) for d in parts})
            changed += sum(r["changed"] for r in done.values())
            sources = parts
            if k == 1:
                distinct = sum(r["edges_out"] for r in done.values())
        log.info("dedup: connected components, round %d: %d changes", rnd, changed)
        if not changed:
            return {"parts": parts, "rounds": rnd, "edges": distinct, "last_step": lambda d, k=k: ins(k, parts, d)}
    raise RuntimeError(f"connected components did not converge in {MAX_COMPONENT_ROUNDS} rounds")


class Deduplicator:
    """Exact, then fuzzy deduplication of Parquet document files (columns id, text, and
    optionally cfg.quality_column), run as Ray stages over files in work_dir."""

    def __init__(self, cfg: DedupConfig, work_dir: str | Path, runner: type[TaskRunner] = TaskRunner):
        """runner runs each stage's tasks (a TaskRunner, or a subclass that also records them).
        The settings were checked when cfg was made (DedupConfig.__post_init__)."""
        self.cfg, self.runner = cfg, runner
        self.work = Path(work_dir)
        self.bands, self.rows = ((cfg.bands, cfg.rows) if cfg.bands is not None else
                                 dedup.lsh_params(cfg.threshold, cfg.num_perm, (cfg.fp_weight, cfg.fn_weight)))

    def plan(self, doc_paths: list[str]) -> Plan:
        """Partitions so that a partition task's records fit memory_budget_mb; the plan is
        stored, and a rerun over the same work_dir with other settings stops instead of mixing."""
        docs = sum(open_parquet(p).metadata.num_rows for p in doc_paths)
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

        def stage(name: str, stage_dir: Path, fn, tasks: dict[str, tuple], timed_as: str | None = None) -> dict[str, dict]:
            t0 = time.perf_counter()
            results[name] = self.runner(name, stage_dir).run(fn, tasks)
            wall[timed_as or name] = round(wall.get(timed_as or name, 0.0) + time.perf_counter() - t0, 3)
            return results[name]

        decision_paths: list[str] = []
        exact: dict[str, dict] = {}
        near: dict = {}
        if cfg.exact:
            stage("exact_hash", w / "exact", exact_hash_task, {
                n: (docs[n], i, [path("exact", p, f"{n}.parquet") for p in parts], cfg.quality_column,
                    write_buffer_bytes(cfg))
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
            components = partial(stage, timed_as="components")
            near = connected_components(dict(zip(parts, edges)), w / "components",
                                        self.component_partitions(sum(r["verified_pairs"] for r in lsh.values())),
                                        components)
            clusters = [path("clusters", f"{p}.parquet") for p in near["parts"]]
            found = stage("clusters", w / "clusters", clusters_task, {
                p: (near["last_step"](p), sig_paths, out) for p, out in zip(near["parts"], clusters)}).values()
            near.update(near_duplicates=sum(r["near_duplicates"] for r in found),
                        clusters=sum(r["clusters"] for r in found),
                        largest_cluster=max(r["largest_cluster"] for r in found))
            decision_paths += clusters
        filtered = stage("filter", w, filter_task, {
            n: (docs[n], i, list(decision_paths), kept[n], dropped[n]) for i, n in enumerate(names)})

        s = merge(filtered[n] for n in names)
        s["exact_duplicates"] = sum(r["exact_duplicates"] for r in exact.values())
        s["near_duplicates"] = near.get("near_duplicates", 0)
        s["clusters"] = near.get("clusters", 0)
        s["largest_cluster"] = near.get("largest_cluster", 0)
        if cfg.fuzzy:
            # Summed over lsh partitions: a pair sharing buckets in k partitions counts k times.
            s["candidate_pairs"] = sum(r["candidate_pairs"] for r in lsh.values())
            s["verified_pairs"] = sum(r["verified_pairs"] for r in lsh.values())
            s["edges"] = near["edges"]
            s["component_partitions"], s["component_rounds"] = len(near["parts"]), near["rounds"]
        s.update(partitions=plan.partitions, bands=plan.bands, rows=plan.rows, stage_wall_seconds=wall)
        # Like the other stages: seconds is the tasks' time summed (this run's and earlier runs').
        s["seconds"] = round(sum(r["seconds"] for stage_results in results.values() for r in stage_results.values()), 3)
        log.info("dedup: %d in, %d exact and %d near duplicates in %d clusters (largest %d), %d out",
                 s["docs_in"], s["exact_duplicates"], s["near_duplicates"], s["clusters"],
                 s["largest_cluster"], s["docs_out"])
        return s

    def component_partitions(self, edges: int) -> int:
        """Partitions of the connected-components steps, so that a task's edges fit
        memory_budget_mb; or exactly dedup.partitions."""
        return self.cfg.partitions or max(1, math.ceil(edges * COMPONENT_EDGE_BYTES / (self.cfg.memory_budget_mb * 2**20)))
