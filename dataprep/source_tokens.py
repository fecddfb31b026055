"""One mixture source's tokenized documents (the tokenize stage's files), numbered 0, 1, ... in
file order, as the stages after tokenize (holdout, shards) read them.

What stays in memory is numbers: each document's token count (8 bytes a document). Its tokens
are read from its file's memory-mapped `.bin` when needed, and its metadata (id, url, input file)
from a metadata file written once per run (`write_metadata`): each document's
`[id, url, source]` as JSON, in the same indexed layout as the tokens (one byte sequence per
document), memory-mapped too. So a stage that visits every document in a random order (the
mixture) holds no string per document, at any corpus size.
"""

from __future__ import annotations

import bisect
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pyarrow.parquet as pq

from dataprep.documents import open_parquet
from dataprep.shards import IndexedShard, ShardWriter

if TYPE_CHECKING:
    from dataprep.stages.tokenize import TokenizedFile

OPEN_FILES = 32  # memory maps kept open per source and kind (tokens, metadata)
METADATA_FIELDS = ("id", "url", "source")


class SourceTokens:
    def __init__(self, files: dict[str, "TokenizedFile"]):
        """`files`: task -> its tokenized file, in the source's order; files without documents
        are left out of the numbering."""
        lengths, self.files = [], []
        for task, f in files.items():
            n = pq.read_table(f.counts, columns=["tokens"]).column("tokens").to_numpy()
            if len(n):
                lengths.append(n.astype(np.int64))
                self.files.append((task, f))
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
        self.starts = np.cumsum([0] + [len(n) for n in lengths])
        self._first = self.starts.tolist()  # per file, for bisect
        self._tokens = functools.lru_cache(maxsize=OPEN_FILES)(lambda f: Sequences(self.files[f][1].tokens))
        self._metadata = functools.lru_cache(maxsize=OPEN_FILES)(lambda f: Sequences(self._metadata_prefix(f)))
        self._metadata_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def locate(self, doc: int) -> tuple[int, int]:
        """(file number, row in that file) of document `doc`."""
        f = bisect.bisect_right(self._first, doc) - 1
        return f, doc - self._first[f]

    def tokens(self, doc: int) -> np.ndarray:
        """The document's tokens (its end-of-document id last), a view of the memory map."""
        f, row = self.locate(doc)
        return self._tokens(f)[row]

    def column(self, name: str, batch_size: int = 8192) -> Iterator[list]:
        """A metadata column of every document in order, a batch at a time."""
        for _, f in self.files:
            for batch in open_parquet(f.counts).iter_batches(batch_size=batch_size, columns=[name]):
                yield batch.column(0).to_pylist()

    def _metadata_prefix(self, f: int) -> Path:
        return self._metadata_dir / f"{self.files[f][0]}_00000"

    def write_metadata(self, folder: Path) -> None:
        """Write each document's [id, url, source] to `folder`, one file per tokenized file,
        streamed a batch at a time; `metadata(doc)` reads them."""
        self._metadata_dir = Path(folder)
        self._metadata.cache_clear()
        for task, f in self.files:
            with ShardWriter(folder, task, np.uint8, shard_tokens=1 << 62) as writer:
                for batch in open_parquet(f.counts).iter_batches(batch_size=8192, columns=list(METADATA_FIELDS)):
                    for row in zip(*(batch.column(c).to_pylist() for c in METADATA_FIELDS)):
                        writer.add_document(np.frombuffer(json.dumps(row).encode(), dtype=np.uint8))

    def metadata(self, doc: int) -> dict:
        """{id, url, source} of document `doc` (after write_metadata)."""
        f, row = self.locate(doc)
        return dict(zip(METADATA_FIELDS, json.loads(self._metadata(f)[row].tobytes())))


class Sequences:
    """The sequences of one indexed file (`<prefix>.bin/.idx`) as slices of a plain view of its
    memory map: a slice of numpy's memmap type costs more than reading the document."""

    def __init__(self, prefix):
        shard = IndexedShard(prefix)
        self.data = np.asarray(shard.tokens)
        self.starts, self.sizes = shard.pointers // shard.dtype.itemsize, shard.sizes

    def __getitem__(self, row: int) -> np.ndarray:
        start = int(self.starts[row])
        return self.data[start:start + int(self.sizes[row])]
