"""Token shards in the Megatron-LM indexed dataset layout ("MMIDIDX").

A shard is a pair of files sharing a prefix:

``<prefix>.bin``
    The token ids of all sequences, concatenated, as raw little-endian integers of one dtype.
``<prefix>.idx``
    Header: magic ``b"MMIDIDX\\x00\\x00"`` (9 bytes), version ``<Q`` (= 1), dtype code ``<B``
    (see ``DTYPE_CODES``), sequence count ``<Q``, document count ``<Q`` (length of the document
    index array). Then, unpadded and little-endian: sequence lengths (int32, in tokens),
    sequence pointers (int64, byte offset of each sequence in .bin) and the document index
    (int64: 0 followed by the cumulative sequence count at the end of each document).

Here every document is one sequence, so the document index is ``[0, 1, ..., n]``. The files are
readable by Megatron-LM / GPT-NeoX ``MMapIndexedDataset``.
"""
from __future__ import annotations

import hashlib
import os
import struct
from array import array
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count
DTYPE_CODES = {1: np.dtype("u1"), 2: np.dtype("i1"), 3: np.dtype("<i2"), 4: np.dtype("<i4"),
               5: np.dtype("<i8"), 6: np.dtype("<f8"), 7: np.dtype("<f4"), 8: np.dtype("<u2")}


def _code_for(dtype) -> int:
    dt = np.dtype(dtype).newbyteorder("<")
    for code, d in DTYPE_CODES.items():
        if d == dt:
            return code
    raise ValueError(f"dtype {dt} has no MMIDIDX code")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 if every id (< vocab_size) fits in 16 bits, else int32 (Megatron's choice)."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<i4")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def shard_prefix(root, entry: dict) -> Path:
    """Where a manifest's shard entry lives: `<prefix>.bin`, `<prefix>.idx` and its lineage
    `<prefix>.docs.parquet` (the manifest's paths are relative to its folder)."""
    return Path(root) / entry["bin"][: -len(".bin")]


def shard_lineage(root, entry: dict) -> Path:
    """The lineage file of a manifest's shard entry: which document each sequence holds."""
    prefix = shard_prefix(root, entry)
    return prefix.with_name(prefix.name + ".docs.parquet")


def stream_shards(manifest: dict, source: str | None = None) -> list[dict]:
    """The shard entries of a manifest's training stream, or (`source`) of that mixture source's
    validation stream."""
    if source is None:
        return manifest["shards"]
    held = manifest.get("validation", {}).get("sources", {})
    if source not in held:
        raise KeyError(f"the manifest holds no validation shards of source {source!r} (it has: {', '.join(held) or 'none'})")
    return held[source]["shards"]


class ShardWriter:
    """Streams documents into shards ``{prefix}_{i:05d}.bin/.idx`` of about ``shard_tokens`` tokens.

    A document is never split: if the open shard is non-empty and the next document would push it
    past ``shard_tokens``, the shard is finalized first (a shard exceeds ``shard_tokens`` only when
    it holds a single longer document). A shard that reaches ``shard_tokens`` is finalized at once.
    """

    def __init__(self, out_dir, prefix: str = "shard", dtype=np.uint16, shard_tokens: int = 1 << 27):
        if shard_tokens <= 0:
            raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if self.dtype.kind not in "iu":
            raise ValueError(f"token dtype must be an integer type, got {self.dtype}")
        self._code = _code_for(self.dtype)
        self._max_id = int(np.iinfo(self.dtype).max)
        self.out_dir, self.prefix, self.shard_tokens = str(out_dir), prefix, int(shard_tokens)
        os.makedirs(self.out_dir, exist_ok=True)
        self.shards: list[dict] = []
        self._bin = None  # open .bin.tmp file of the current shard, or None
        self._closed = False

    def _path(self, name: str, ext: str) -> str:
        return os.path.join(self.out_dir, f"{name}.{ext}")

    def add_document(self, tokens) -> int:
        """Append one document (one sequence); returns the number of the shard that holds it."""
        if self._closed:
            raise ValueError("ShardWriter is closed")
        arr = np.asarray(tokens)
        if arr.ndim != 1 or not 0 < arr.size <= np.iinfo(np.int32).max:
            raise ValueError(f"a document must be a non-empty 1-D token array (< 2**31), got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise ValueError(f"token ids must be integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if hi > self._max_id:
            raise ValueError(f"token id {hi} does not fit dtype {self.dtype} (max {self._max_id})")
        if lo < 0:
            raise ValueError(f"negative token id {lo}")
        if self._bin is not None and self._tokens + arr.size > self.shard_tokens:
            self._finalize()
        if self._bin is None:
            self._name = f"{self.prefix}_{len(self.shards):05d}"
            self._bin = open(self._path(self._name, "bin.tmp"), "wb", buffering=1 << 20)
            self._hash, self._sizes, self._tokens = hashlib.sha256(), array("q"), 0  # 8 bytes a document
        data = np.ascontiguousarray(arr, dtype=self.dtype).tobytes()
        self._bin.write(data)
        self._hash.update(data)
        self._sizes.append(arr.size)
        self._tokens += arr.size
        index = len(self.shards)
        if self._tokens >= self.shard_tokens:
            self._finalize()
        return index

    def _finalize(self) -> None:
        self._bin.close()
        self._bin = None
        n = len(self._sizes)
        sizes = np.frombuffer(self._sizes, dtype=np.int64).astype("<i8")
        pointers = np.zeros(n, dtype="<i8")
        np.cumsum(sizes[:-1] * self.dtype.itemsize, out=pointers[1:])
        doc_idx = np.arange(n + 1, dtype="<i8")
        idx_tmp = self._path(self._name, "idx.tmp")
        with open(idx_tmp, "wb") as f:
            f.write(_HEADER.pack(MAGIC, VERSION, self._code, n, n + 1))
            f.write(sizes.astype("<i4").tobytes())  # int32 fits: checked in add_document
            f.write(pointers.tobytes())
            f.write(doc_idx.tobytes())
        os.replace(self._path(self._name, "bin.tmp"), self._path(self._name, "bin"))
        os.replace(idx_tmp, self._path(self._name, "idx"))
        self.shards.append({"name": self._name, "bin": f"{self._name}.bin", "idx": f"{self._name}.idx",
                            "documents": n, "tokens": self._tokens, "bin_sha256": self._hash.hexdigest(),
                            "idx_sha256": sha256_file(self._path(self._name, "idx"))})

    def close(self) -> None:
        """Finalize the open shard (if any documents are pending). Idempotent."""
        if not self._closed and self._bin is not None:
            self._finalize()
        self._closed = True

    def abort(self) -> None:
        """Drop the open shard's temporary files; finished shards stay."""
        if self._bin is not None:
            self._bin.close()
            self._bin = None
            os.remove(self._path(self._name, "bin.tmp"))
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class IndexedShard:
    """Read-only view of one ``<prefix>.bin/.idx`` pair; the .bin is memory-mapped."""

    def __init__(self, prefix_path):
        prefix_path = str(prefix_path)
        for ext in (".bin", ".idx"):  # accept the path of either file as well as the bare prefix
            if prefix_path.endswith(ext):
                prefix_path = prefix_path[: -len(ext)]
        self.idx_path, self.bin_path = prefix_path + ".idx", prefix_path + ".bin"
        with open(self.idx_path, "rb") as f:
            buf = f.read()
        if len(buf) < _HEADER.size:
            raise ValueError(f"{self.idx_path}: truncated header ({len(buf)} bytes)")
        magic, version, code, n, d = _HEADER.unpack_from(buf)
        if magic != MAGIC:
            raise ValueError(f"{self.idx_path}: bad magic {magic!r}, not an MMIDIDX index")
        if version != VERSION:
            raise ValueError(f"{self.idx_path}: unsupported version {version}")
        if code not in DTYPE_CODES:
            raise ValueError(f"{self.idx_path}: unknown dtype code {code}")
        self.dtype = DTYPE_CODES[code]
        expected = _HEADER.size + 4 * n + 8 * n + 8 * d
        if len(buf) != expected:
            raise ValueError(f"{self.idx_path}: size {len(buf)} bytes, expected {expected} for {n} sequences")
        off = _HEADER.size
        self.sizes = np.frombuffer(buf, "<i4", n, off)
        self.pointers = np.frombuffer(buf, "<i8", n, off + 4 * n)
        self.doc_idx = np.frombuffer(buf, "<i8", d, off + 12 * n)
        if d and (self.doc_idx[0] != 0 or self.doc_idx[-1] != n):
            raise ValueError(f"{self.idx_path}: document index must run from 0 to {n}")
        self.num_tokens = int(self.sizes.sum(dtype=np.int64))
        bin_size = os.path.getsize(self.bin_path)
        want = int(self.pointers[-1]) + int(self.sizes[-1]) * self.dtype.itemsize if n else 0
        if bin_size != want:
            raise ValueError(f"{self.bin_path}: {bin_size} bytes, index expects {want}")
        self.tokens = (np.memmap(self.bin_path, dtype=self.dtype, mode="r") if bin_size
                       else np.empty(0, dtype=self.dtype))

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self.sizes)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for {n} sequences")
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self.tokens[start : start + int(self.sizes[i])]
