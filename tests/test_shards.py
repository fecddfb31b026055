import hashlib
import os
import struct

import numpy as np
import pytest

from dataprep.shards import IndexedShard, ShardWriter, dtype_for_vocab

# --- an independent MMIDIDX reader, written from the format description only -------------------
_CODES = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f8", 7: "<f4", 8: "<u2"}


def read_mmidx(prefix):
    idx = open(f"{prefix}.idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    version, code, n, d = struct.unpack_from("<QBQQ", idx, 9)
    assert version == 1
    off = 9 + 8 + 1 + 8 + 8
    sizes = np.frombuffer(idx, "<i4", n, off)
    pointers = np.frombuffer(idx, "<i8", n, off + 4 * n)
    doc_idx = np.frombuffer(idx, "<i8", d, off + 12 * n)
    assert off + 12 * n + 8 * d == len(idx)
    dt = np.dtype(_CODES[code])
    data = open(f"{prefix}.bin", "rb").read()
    seqs = [np.frombuffer(data, dt, int(s), int(p)) for s, p in zip(sizes, pointers)]
    return dt, sizes, pointers, doc_idx, seqs, len(data)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def make_docs(vocab, seed=0):
    rng = np.random.default_rng(seed)
    lengths = [1, 17, 50, 3, 120, 1, 49, 1, 30, 30] + list(rng.integers(1, 45, size=25))
    docs = [rng.integers(0, vocab, size=int(n)) for n in lengths]
    docs[2][0], docs[3][0] = vocab - 1, 0  # extremes of the id range
    return docs


@pytest.mark.parametrize("vocab", [50257, 100000])
def test_round_trip_across_shards(tmp_path, vocab):
    shard_tokens = 50
    docs = make_docs(vocab)
    with ShardWriter(tmp_path, prefix="train", dtype=dtype_for_vocab(vocab), shard_tokens=shard_tokens) as w:
        for i, d in enumerate(docs):
            w.add_document(d if i % 2 else d.tolist())  # arrays and lists
    shards = w.shards
    assert len(shards) >= 4
    assert [s["name"] for s in shards] == [f"train_{i:05d}" for i in range(len(shards))]
    assert sorted(os.listdir(tmp_path)) == sorted(f for s in shards for f in (s["bin"], s["idx"]))

    expected_dtype = np.dtype("<u2") if vocab <= 65536 else np.dtype("<i4")
    read_back, first_doc_len = [], []
    for s in shards:
        prefix = tmp_path / s["name"]
        dt, sizes, pointers, doc_idx, seqs, bin_bytes = read_mmidx(prefix)
        assert dt == expected_dtype
        n = s["documents"]
        assert len(sizes) == n and sizes.sum() == s["tokens"]
        assert pointers[0] == 0
        np.testing.assert_array_equal(np.diff(pointers), sizes[:-1].astype(np.int64) * dt.itemsize)
        assert bin_bytes == s["tokens"] * dt.itemsize
        assert doc_idx[0] == 0 and doc_idx[-1] == n
        np.testing.assert_array_equal(doc_idx, np.arange(n + 1))
        assert s["bin_sha256"] == sha(f"{prefix}.bin") and s["idx_sha256"] == sha(f"{prefix}.idx")

        shard = IndexedShard(prefix)
        assert len(shard) == n and shard.dtype == dt and shard.num_tokens == s["tokens"]
        np.testing.assert_array_equal(shard.sizes, sizes)
        np.testing.assert_array_equal(shard.pointers, pointers)
        np.testing.assert_array_equal(shard.doc_idx, doc_idx)
        assert shard.tokens.shape == (s["tokens"],)
        np.testing.assert_array_equal(shard.tokens, np.concatenate(seqs))
        for i in range(n):
            np.testing.assert_array_equal(shard[i], seqs[i])
        np.testing.assert_array_equal(shard[-1], seqs[-1])
        with pytest.raises(IndexError):
            shard[n]
        read_back += seqs
        first_doc_len.append(len(seqs[0]))

    # every document comes back whole, in order (so no shard boundary split one)
    assert len(read_back) == len(docs)
    for got, want in zip(read_back, docs):
        np.testing.assert_array_equal(got, want)
    # rollover rule: a shard exceeds shard_tokens only if it is a single document ...
    for s in shards:
        assert s["tokens"] <= shard_tokens or s["documents"] == 1
    assert any(s["tokens"] > shard_tokens for s in shards)  # the 120-token document
    # ... and a shard was closed only because it was full or the next document did not fit
    for s, next_first in zip(shards[:-1], first_doc_len[1:]):
        assert s["tokens"] >= shard_tokens or s["tokens"] + next_first > shard_tokens


def test_dtype_for_vocab_and_overflow(tmp_path):
    assert dtype_for_vocab(50257) == np.uint16
    assert dtype_for_vocab(65536) == np.uint16
    assert dtype_for_vocab(65537) == np.int32
    assert dtype_for_vocab(100000) == np.int32
    with ShardWriter(tmp_path, dtype=dtype_for_vocab(50257), shard_tokens=100) as w:
        w.add_document([0, 65535])
        with pytest.raises(ValueError, match="65536"):
            w.add_document([1, 65536, 2])
        with pytest.raises(ValueError):
            w.add_document([-1, 3])
        with pytest.raises(ValueError):
            w.add_document([])
    assert [s["documents"] for s in w.shards] == [1]  # rejected documents were not written
    np.testing.assert_array_equal(IndexedShard(tmp_path / "shard_00000")[0], [0, 65535])
    with ShardWriter(tmp_path / "big", dtype=dtype_for_vocab(100000)) as w:
        w.add_document([99999, 70000])
    np.testing.assert_array_equal(IndexedShard(tmp_path / "big" / "shard_00000")[0], [99999, 70000])


def _one_shard(tmp_path):
    with ShardWriter(tmp_path, shard_tokens=1000) as w:
        w.add_document([5, 6, 7])
        w.add_document([8, 9])
    return tmp_path / "shard_00000"


def test_reader_rejects_bad_bin_size(tmp_path):
    prefix = _one_shard(tmp_path)
    IndexedShard(prefix)
    data = open(f"{prefix}.bin", "rb").read()
    open(f"{prefix}.bin", "wb").write(data[:-2])
    with pytest.raises(ValueError, match="bin"):
        IndexedShard(prefix)
    open(f"{prefix}.bin", "wb").write(data + b"\0\0")
    with pytest.raises(ValueError, match="bin"):
        IndexedShard(prefix)


def test_reader_rejects_bad_index(tmp_path):
    prefix = _one_shard(tmp_path)
    idx = open(f"{prefix}.idx", "rb").read()
    open(f"{prefix}.idx", "wb").write(b"XXIDIDX\x00\x00" + idx[9:])
    with pytest.raises(ValueError, match="magic"):
        IndexedShard(prefix)
    open(f"{prefix}.idx", "wb").write(idx[:9] + struct.pack("<Q", 2) + idx[17:])
    with pytest.raises(ValueError, match="version"):
        IndexedShard(prefix)
    for cut in (20, len(idx) - 8):
        open(f"{prefix}.idx", "wb").write(idx[:cut])
        with pytest.raises(ValueError, match="shard_00000.idx"):
            IndexedShard(prefix)


def test_no_tmp_files_and_nothing_for_no_documents(tmp_path):
    with ShardWriter(tmp_path / "empty") as w:
        pass
    assert w.shards == [] and os.listdir(tmp_path / "empty") == []

    w = ShardWriter(tmp_path / "many", shard_tokens=4)
    for i in range(10):
        w.add_document([i, i + 1, 2])
    assert any(f.endswith(".tmp") for f in os.listdir(tmp_path / "many"))  # open shard in progress
    w.close()
    w.close()  # idempotent
    names = os.listdir(tmp_path / "many")
    assert not any(f.endswith(".tmp") for f in names)
    assert len(names) == 2 * len(w.shards) == 20
    with pytest.raises(ValueError):
        w.add_document([1])


def test_exception_inside_context_drops_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, shard_tokens=5) as w:
            w.add_document([1, 2, 3, 4, 5])  # fills shard 0, finalized at once
            w.add_document([1, 2])
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["shard_00000.bin", "shard_00000.idx"]
