"""The corpus job end to end on the real sample WARCs."""

import json
import shutil

import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from conftest import run_module
from dataprep.dedup import normalize
from dataprep.shards import IndexedShard, sha256_file

STAGES = ["extract", "filter", "dedup", "tokenize"]


def _all_docs(folder):
    """Every document a stage wrote to `folder`, one Parquet file per input file (task)."""
    corpus = next(p for p in folder.parents if (p / "stats.json").is_file())
    tasks = sorted(p.stem for p in (corpus / "extract" / "_done").glob("*.json"))
    rows = []
    for task in tasks:
        rows.extend(pq.read_table(folder / f"{task}.parquet").to_pylist())
    return rows


def test_stats_account_for_every_document(corpus):
    stats = json.loads((corpus / "stats.json").read_text())
    stages = stats["stages"]
    assert list(stages) == STAGES
    for name, s in stages.items():
        assert s["docs_in"] == s["docs_out"] + sum(s["dropped"].values()), name
        assert s["seconds"] >= 0
    for a, b in zip(STAGES, STAGES[1:]):
        assert stages[a]["docs_out"] == stages[b]["docs_in"], (a, b)
    assert stages["extract"]["docs_in"] > 200  # responses + conversions of the sample archives
    assert stages["extract"]["dropped"]["not_html"] > 0  # images, PDFs, robots.txt ...
    assert stages["filter"]["dropped"].get("too_short", 0) > 0
    assert stages["dedup"]["dropped"]["exact_duplicate"] > 0
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["total_documents"] == stages["tokenize"]["docs_out"] == stats["documents"]


def test_dropped_documents_are_kept_apart_with_reasons(corpus):
    kept = {d["id"]: d for d in _all_docs(corpus / "dedup")}
    dropped = _all_docs(corpus / "dedup" / "dropped")
    assert dropped and not set(kept) & {d["id"] for d in dropped}
    for d in dropped:
        assert d["drop_reason"] in ("exact_duplicate", "near_duplicate")
        survivor = kept[d["duplicate_of"]]  # the survivor is kept
        assert survivor["id"] < d["id"]
        if d["drop_reason"] == "exact_duplicate":
            assert normalize(survivor["text"]) == normalize(d["text"])
    filtered = _all_docs(corpus / "extract" / "dropped")
    assert {d["drop_reason"] for d in filtered} >= {"not_html", "too_short"}
    for d in _all_docs(corpus / "extract"):
        assert len(d["text"]) >= 200


def test_shards_match_manifest_and_decode_to_kept_documents(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    tok = Tokenizer.from_file(str(corpus / manifest["tokenizer"]["path"]))
    assert manifest["tokenizer"]["sha256"] == sha256_file(corpus / "tokenizer.json")
    assert tok.get_vocab_size() == manifest["tokenizer"]["vocab_size"] == 4096
    eod = manifest["tokenizer"]["eod_id"]
    assert manifest["dtype"] == "uint16" and len(manifest["shards"]) >= 2
    kept = {d["id"]: d for d in _all_docs(corpus / "dedup")}
    seen = 0
    for entry in manifest["shards"]:
        assert sha256_file(corpus / entry["bin"]) == entry["bin_sha256"]
        assert sha256_file(corpus / entry["idx"]) == entry["idx_sha256"]
        shard = IndexedShard(corpus / entry["name"])
        assert shard.num_tokens == entry["tokens"] and len(shard) == entry["documents"]
        lineage = pq.read_table(corpus / f"{entry['name']}.docs.parquet").to_pylist()
        assert len(lineage) == len(shard)
        for row in lineage[:5]:
            seq = shard[row["sequence"]]
            assert seq[-1] == eod and eod not in seq[:-1]
            assert tok.decode(seq[:-1].tolist()) == kept[row["id"]]["text"]
        seen += len(shard)
    assert seen == len(kept)


def test_rerun_redoes_only_unfinished_tasks_and_ends_identical(corpus, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    before = {p.name: sha256_file(p) for p in copy.glob("shard_*")}
    # Simulate a crash: one extract task and one tokenize task never finished.
    victim = sorted((copy / "extract" / "_done").glob("*.json"))[0]
    victim.unlink()
    (copy / "extract" / victim.name.replace(".json", ".parquet")).unlink()
    next(iter((copy / "tokenize" / "_done").glob("*.json"))).unlink()
    for p in copy.glob("shard_*"):
        p.unlink()
    (copy / "manifest.json").unlink()
    proc = run_module("dataprep", f"output_dir={copy}", "shards.shard_tokens=200000")
    n = len(list((copy / "extract" / "_done").glob("*.json")))
    assert f"[extract] {n - 1}/{n} tasks already done" in proc.stdout
    assert f"[tokenize] {n - 1}/{n} tasks already done" in proc.stdout
    assert {p.name: sha256_file(p) for p in copy.glob("shard_*")} == before


def test_missing_input_folder_is_a_clear_error(tmp_path):
    proc = run_module("dataprep", f"ingest.input_dir={tmp_path}/nowhere", f"output_dir={tmp_path}/o", check=False)
    assert proc.returncode != 0
    assert "ingest.input_dir" in proc.stderr + proc.stdout
