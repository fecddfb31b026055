"""The files the dedup stages exchange (dataprep/dedup_stages.py has the work folder's layout):
their schemas, a writer that splits tables by partition, and the readers that take from them only
the rows a task needs. A document is known by its number doc = input file index << 32 | row."""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from dataprep.config import DedupConfig
from dataprep.documents import TableWriter, open_parquet

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
# Exact decisions also keep their survivor's number: a survivor later dropped as a near duplicate
# hands its own survivor on (dedup_tasks.resolve_task).
EXACT_DECISION_SCHEMA = DECISION_SCHEMA.append(pa.field("survivor", pa.uint64()))


def signature_schema(num_perm: int) -> pa.Schema:
    """h0: the first word of the document's text digest, whose residue names its exact partition
    (null when exact dedup is off)."""
    return pa.schema([("doc", pa.uint64()), ("id", pa.string()), ("quality", pa.float64()), ("h0", pa.uint64()),
                      ("minhash", pa.list_(pa.uint32(), num_perm))])


@dataclass(frozen=True)
class DedupLayout:
    """How one dedup run splits its work: the documents, the partitions of the partitioned stages
    and the LSH bands x rows (stored as work_dir/plan.json)."""
    docs: int
    partitions: int
    bands: int
    rows: int


def doc_numbers(file_index: int, first_row: int, n: int) -> np.ndarray:
    return (np.uint64(file_index) << np.uint64(32)) | np.arange(first_row, first_row + n, dtype=np.uint64)


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


def doc_batches(path: str, quality_column: str | None, batch_size: int = DOC_BATCH):
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


def decisions_for_file(paths: list[str], file_index: int) -> pa.Table:
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


def decision_table(docs: np.ndarray, reason: str, duplicate_of: pa.Array, survivors: np.ndarray | None = None) -> pa.Table:
    """Decisions: each of `docs` dropped for `reason`, naming its survivor's id (and number, for
    exact decisions)."""
    columns = {"doc": docs, "reason": pa.array([reason] * len(docs), pa.string()), "duplicate_of": duplicate_of}
    if survivors is None:
        return pa.table(columns, schema=DECISION_SCHEMA)
    return pa.table({**columns, "survivor": survivors}, schema=EXACT_DECISION_SCHEMA)


def signatures(sig_paths: list[str], docs: np.ndarray, num_perm: int) -> np.ndarray:
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


def read_columns(paths: list[str], names: tuple[str, ...]) -> list[np.ndarray]:
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
