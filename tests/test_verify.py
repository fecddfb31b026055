"""`python -m dataprep.verify`: a damaged shard set is reported, shard by shard; and lineage finds
the documents behind any tokens of the stream."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from conftest import run_module
from dataprep.shards import IndexedShard, shard_lineage, shard_prefix
from dataprep.verify import lineage, verify


@pytest.fixture
def shards(corpus, tmp_path):
    """A copy of the corpus job's shard set (what a trainer gets): manifest, tokenizer, shards."""
    out = tmp_path / "shards"
    out.mkdir()
    for p in [corpus / "manifest.json", corpus / "tokenizer.json"]:
        shutil.copy(p, out / p.name)
    folder = json.loads((corpus / "manifest.json").read_text())["shard_set"]
    shutil.copytree(corpus / folder, out / folder)
    return out


def _file(root, entry, suffix):
    """A shard's file: `.bin`, `.idx` or `.docs.parquet`."""
    return shard_lineage(root, entry) if suffix == ".docs.parquet" else shard_prefix(root, entry).with_suffix(suffix)


def _problems_about(problems, shard):
    return [p for p in problems if p.startswith(shard)]


def test_intact_shards_pass(shards):
    assert verify(shards / "manifest.json") == []
    proc = run_module("dataprep.verify", str(shards / "manifest.json"), timeout=120)
    assert proc.stdout.startswith("OK ") and "target" in proc.stdout and "achieved" in proc.stdout
    assert "validation: " in proc.stdout and "documents" in proc.stdout


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(bytes(data[:-4]))
    else:  # altered: same size, one byte changed
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["missing", "truncated", "altered"])
def test_missing_truncated_and_altered_shards_are_reported(shards, how):
    m = json.loads((shards / "manifest.json").read_text())
    assert len(m["shards"]) >= 2
    victim = m["shards"][-1]["name"]
    _damage(_file(shards, m["shards"][-1], ".bin"), how)
    problems = verify(shards / "manifest.json")
    assert problems and all(p.startswith(f"{victim}:") for p in problems), problems  # the others are fine
    assert how in problems[0] and m["shards"][-1]["bin"] in problems[0]
    if how == "missing":
        proc = run_module("dataprep.verify", str(shards / "manifest.json"), check=False, timeout=120)
        assert proc.returncode == 1 and f"FAIL {victim}: missing {m['shards'][-1]['bin']}" in proc.stdout


def test_altered_index_and_lineage_are_reported(shards):
    m = json.loads((shards / "manifest.json").read_text())
    a, b = (s["name"] for s in m["shards"][:2])
    shard = IndexedShard(shard_prefix(shards, m["shards"][0]))
    assert len(shard) >= 2
    # move a document boundary: the index still parses, the sizes still add up, the content lies
    idx = bytearray(_file(shards, m["shards"][0], ".idx").read_bytes())
    sizes = np.frombuffer(idx, "<i4", len(shard), 34).copy()
    sizes[0] += 1
    sizes[1] -= 1
    idx[34:34 + 4 * len(shard)] = sizes.tobytes()
    _file(shards, m["shards"][0], ".idx").write_bytes(bytes(idx))
    _file(shards, m["shards"][1], ".docs.parquet").unlink()
    problems = verify(shards / "manifest.json")
    about_a = _problems_about(problems, a)
    assert any(".idx altered" in p for p in about_a)
    assert any("inconsistent index" in p or "end-of-document" in p for p in about_a)
    assert any("missing" in p and "docs.parquet" in p for p in _problems_about(problems, b))


def test_weights_and_tokenizer_are_checked(shards):
    path = shards / "manifest.json"
    m = json.loads(path.read_text())
    name = next(iter(m["sources"]))
    m["sources"][name]["target_weight"] += 0.05
    m["sources"][name].pop("note", None)
    path.write_text(json.dumps(m))
    problems = verify(path)
    assert any(p.startswith("weights:") and "sum to 1" in p for p in problems)
    assert any(p.startswith(f"weights: source {name}") and "tolerance" in p for p in problems)
    m["sources"][name]["target_weight"] -= 0.05
    m["sources"][name]["tokens"] += 10
    path.write_text(json.dumps(m))
    assert any(f"source {name}: the shards hold" in p for p in verify(path))
    m["sources"][name]["tokens"] -= 10
    path.write_text(json.dumps(m))
    assert verify(path) == []
    (shards / "tokenizer.json").write_text((shards / "tokenizer.json").read_text() + " ")
    assert [p for p in verify(path) if p.startswith("tokenizer")] == ["tokenizer: tokenizer.json altered: sha256 differs from the manifest's"]


def test_validation_shards_are_checked_and_kept_out_of_training(shards, tmp_path):
    path = shards / "manifest.json"
    m = json.loads(path.read_text())
    held = m["validation"]["sources"]
    name = max(held, key=lambda n: held[n]["documents"])
    entry = held[name]["shards"][0]
    # A training shard's lineage that names a held-out document: the held-out text is in training.
    leaked = tmp_path / "leaked"
    shutil.copytree(shards, leaked)
    victim = pq.read_table(_file(leaked, entry, ".docs.parquet")).column("id")[0].as_py()
    lineage_file = _file(leaked, m["shards"][0], ".docs.parquet")
    rows = pq.read_table(lineage_file)
    ids = rows.column("id").to_pylist()
    ids[rows.column("mixture_source").to_pylist().index(name)] = victim
    pq.write_table(rows.set_column(rows.schema.get_field_index("id"), "id", pa.array(ids)), lineage_file)
    assert verify(leaked / "manifest.json") == [f"{m['shards'][0]['name']}: holds 1 document(s) held out for validation"]
    # A damaged validation shard, and counts that disagree with the manifest.
    _damage(_file(shards, entry, ".bin"), "altered")
    assert verify(path) == [f"{entry['name']}: {entry['bin']} altered: sha256 differs from the manifest's"]
    held[name]["tokens"] += 1
    path.write_text(json.dumps(m))
    assert any(p.startswith(f"validation {name}: its shards hold") for p in verify(path))


def _documents(corpus, manifest):
    docs = {}
    for name, s in manifest["sources"].items():
        folder = corpus / "dedup" if s["kind"] == "crawl" else corpus / "sources" / name
        for p in sorted(folder.glob("*.parquet")):
            for row in pq.read_table(p, columns=["id", "text"]).to_pylist():
                docs[name, row["id"]] = row["text"]
    return docs


def test_lineage_finds_the_documents_of_any_tokens(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    docs = _documents(corpus, manifest)
    tok = Tokenizer.from_file(str(corpus / "tokenizer.json"))
    stream = np.concatenate([IndexedShard(shard_prefix(corpus, s)).tokens for s in manifest["shards"]])
    assert len(stream) == manifest["total_tokens"]
    rng = np.random.default_rng(0)
    for offset in [0, len(stream) - 1, *rng.integers(0, len(stream), 20).tolist()]:
        (row,) = lineage(corpus / "manifest.json", offset)
        start = row["stream_offset"]
        assert start <= offset < start + row["tokens"]
        tokens = stream[start:start + row["tokens"]]
        assert tokens[-1] == manifest["tokenizer"]["eod_id"]
        assert tok.decode(tokens[:-1].tolist()) == docs[row["mixture_source"], row["id"]]
        assert row["url"]
    # a window across documents names each of them, in stream order, back to back
    first = lineage(corpus / "manifest.json", 0)[0]
    rows = lineage(corpus / "manifest.json", first["tokens"] - 5, 10_000)
    assert len(rows) >= 2 and rows[0]["id"] == first["id"]
    for a, b in zip(rows, rows[1:]):
        assert b["stream_offset"] == a["stream_offset"] + a["tokens"]
    with pytest.raises(IndexError):
        lineage(corpus / "manifest.json", len(stream))


def test_lineage_of_a_training_sample(corpus):
    from pretrain.data import PackedSamples, TokenStream

    stream = TokenStream(corpus / "manifest.json")
    samples = PackedSamples(stream, seq_len=128, seed=3)
    for index in (0, 7, 1234):
        x, y = samples[index]
        start = samples.window(index) * samples.seq_len
        rows = lineage(corpus / "manifest.json", start, samples.seq_len + 1)
        covered = np.concatenate([stream.read(r["stream_offset"], r["tokens"]) for r in rows])
        at = start - rows[0]["stream_offset"]
        np.testing.assert_array_equal(covered[at:at + samples.seq_len], x)
        np.testing.assert_array_equal(covered[at + 1:at + 1 + samples.seq_len], y)
