"""Documents as Parquet: the one format every stage reads and writes.

A stage's output for one task is two files: the kept documents, and the dropped ones with their
`drop_reason` (and, for duplicates, the id of the document they duplicate), so every count in
stats.json can be traced to rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("source", pa.string()),
        ("date", pa.string()),
        ("text", pa.string()),
        ("drop_reason", pa.string()),
        ("duplicate_of", pa.string()),
        ("lang", pa.string()),  # language id (ISO 639-1) and its probability, set by extract
        ("lang_score", pa.float32()),
        ("quality_score", pa.float32()),  # the quality classifier's P(reference-like)
    ]
)
COLUMNS = SCHEMA.names


def new_document(id: str, text: str, url: str = "", source: str = "", date: str = "") -> dict:
    return {"id": id, "url": url, "source": source, "date": date, "text": text,
            "drop_reason": None, "duplicate_of": None, "lang": None, "lang_score": None,
            "quality_score": None}


def write_table(table: pa.Table, path: str | Path, row_group_size: int | None = None) -> None:
    """Write a Parquet file atomically: a temporary name, then rename (a crash never leaves a
    half-written file that a rerun would take for a finished one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
    os.replace(tmp, path)


def write_documents(path: str | Path, docs: Iterable[dict]) -> int:
    """Write `docs` to `path` atomically; returns the count."""
    rows = [{c: d.get(c) for c in COLUMNS} for d in docs]
    write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return len(rows)


def read_documents(path: str | Path, columns: list[str] | None = None) -> Iterator[dict]:
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=1024, columns=columns):
        yield from batch.to_pylist()
