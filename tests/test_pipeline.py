"""The corpus job end to end on the real sample WARCs."""

import json
import shutil
from collections import Counter

import pyarrow.parquet as pq
from tokenizers import Tokenizer

from conftest import CORPUS_OVERRIDES, run_module
from dataprep.dedup import normalize
from dataprep.shards import IndexedShard, sha256_file, shard_lineage, shard_prefix

STAGES = ["extract", "language", "filter", "quality", "dedup", "tokenize", "holdout"]


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
    for a, b in zip(STAGES[:-2], STAGES[1:-2]):  # each stage reads the one before (tokenize: below)
        assert stages[a]["docs_out"] == stages[b]["docs_in"], (a, b)
    assert stages["holdout"]["docs_in"] == stages["tokenize"]["docs_out"]
    # tokenize reads the crawl (dedup's output) and every other mixture source's documents
    manifest = json.loads((corpus / "manifest.json").read_text())
    crawl = next(n for n, s in manifest["sources"].items() if s["kind"] == "crawl")
    by_source = stages["tokenize"]["by_source"]
    assert by_source[crawl] == stages["dedup"]["docs_out"]
    assert len(by_source) >= 3 and set(by_source) == set(manifest["sources"])
    held = stages["holdout"]["by_source"]
    for name, s in stats["sources"].items():
        assert s["docs_in"] == s["docs_out"] + sum(s["dropped"].values()), name
        assert by_source[name] == s["docs_out"] == held[name]["documents"] > 0
    for name, h in held.items():  # the mixture plans the documents not held out, nor sharing text with them
        v = manifest["validation"]["sources"][name]
        assert (h["held_out"], h["overlaps_held_out"]) == (v["documents"], v["overlapping_documents"])
        assert manifest["sources"][name]["source_documents"] == h["documents"] - h["held_out"] - h["overlaps_held_out"]
        assert h["held_out"] == max(1, -(-h["documents"] // 20))  # validation.fraction 0.05, min 1
    assert stages["tokenize"]["docs_in"] == sum(by_source.values())
    assert stages["extract"]["docs_in"] > 200  # responses + conversions of the sample archives
    assert stages["extract"]["dropped"]["not_html"] > 0  # images, PDFs, robots.txt ...
    assert stages["filter"]["dropped"].get("too_short", 0) > 0
    assert stages["dedup"]["dropped"]["exact_duplicate"] > 0
    assert manifest["total_documents"] == stats["documents"] == sum(s["documents"] for s in manifest["sources"].values())


def test_dropped_documents_are_kept_apart_with_reasons(corpus):
    kept = {d["id"]: d for d in _all_docs(corpus / "dedup")}
    dropped = _all_docs(corpus / "dedup" / "dropped")
    assert dropped and not set(kept) & {d["id"] for d in dropped}
    for d in dropped:
        assert d["drop_reason"] in ("exact_duplicate", "near_duplicate")
        survivor = kept[d["duplicate_of"]]  # the survivor is kept
        # One survivor per cluster: the highest quality score, then the smallest id.
        rank = lambda doc: (-(doc["quality_score"] or 0.0), doc["id"])  # noqa: E731
        assert rank(survivor) < rank(d)
        if d["drop_reason"] == "exact_duplicate":
            assert normalize(survivor["text"]) == normalize(d["text"])
    filtered = _all_docs(corpus / "extract" / "dropped")
    assert {d["drop_reason"] for d in filtered} >= {"not_html", "too_short"}
    for d in _all_docs(corpus / "extract"):
        assert len(d["text"]) >= 200


def _source_docs(corpus, manifest):
    """Every document of every mixture source, by source: the crawl's after dedup, the others'."""
    docs = {}
    for name, s in manifest["sources"].items():
        folder = corpus / "dedup" if s["kind"] == "crawl" else corpus / "sources" / name
        rows = _all_docs(folder) if s["kind"] == "crawl" else [
            r for p in sorted(folder.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
        docs[name] = {d["id"]: d for d in rows}
    return docs


def test_shards_match_manifest_and_decode_to_kept_documents(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    tok = Tokenizer.from_file(str(corpus / manifest["tokenizer"]["path"]))
    assert manifest["tokenizer"]["sha256"] == sha256_file(corpus / "tokenizer.json")
    assert tok.get_vocab_size() == manifest["tokenizer"]["vocab_size"] == 4096
    eod = manifest["tokenizer"]["eod_id"]
    assert manifest["dtype"] == "uint16" and len(manifest["shards"]) >= 2
    docs = _source_docs(corpus, manifest)
    written = Counter()
    held = Counter()
    validation = [(e, True) for v in manifest["validation"]["sources"].values() for e in v["shards"]]
    for entry, held_out in [(e, False) for e in manifest["shards"]] + validation:
        assert entry["bin"].startswith(manifest["shard_set"] + "/")
        assert sha256_file(corpus / entry["bin"]) == entry["bin_sha256"]
        assert sha256_file(corpus / entry["idx"]) == entry["idx_sha256"]
        shard = IndexedShard(shard_prefix(corpus, entry))
        assert shard.num_tokens == entry["tokens"] and len(shard) == entry["documents"]
        lineage = pq.read_table(shard_lineage(corpus, entry)).to_pylist()
        assert len(lineage) == len(shard)
        for row in lineage:
            assert row["id"] in docs[row["mixture_source"]]
            (held if held_out else written)[row["mixture_source"], row["id"]] += 1
        for row in lineage[:5]:
            seq = shard[row["sequence"]]
            assert seq[-1] == eod and eod not in seq[:-1]
            assert tok.decode(seq[:-1].tolist()) == docs[row["mixture_source"]][row["id"]]["text"]
    for name, s in manifest["sources"].items():
        assert sum(n for (src, _), n in written.items() if src == name) == s["documents"]
    # each held-out document once, in its source's validation shards and never in training
    assert set(held.values()) == {1} and not set(held) & set(written)
    assert {src for src, _ in held} == set(manifest["sources"])
    # the default mixture is sized by one epoch of the crawl: every kept crawl document exactly
    # once, but those held out (or sharing text with them)
    crawl = next(n for n, s in manifest["sources"].items() if s["kind"] == "crawl")
    assert (manifest["mixture"]["anchor"], manifest["mixture"]["anchor_epochs"]) == (crawl, 1.0)
    trained = {doc_id: n for (src, doc_id), n in written.items() if src == crawl}
    assert set(trained.values()) == {1} and len(trained) == manifest["sources"][crawl]["source_documents"]
    assert set(docs[crawl]) - set(trained) >= {doc_id for src, doc_id in held if src == crawl}


def test_rerun_redoes_only_unfinished_tasks_and_ends_identical(corpus, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    before = _shard_files(copy)
    scored = {p.name: sha256_file(p) for p in (copy / "quality").glob("*.parquet")}
    # Simulate a crash: one extract task, one quality task and one tokenize task never finished.
    victim = sorted((copy / "extract" / "_done").glob("*.json"))[0]
    victim.unlink()
    (copy / "extract" / victim.name.replace(".json", ".parquet")).unlink()
    unscored = sorted(p for p in (copy / "quality" / "_done").glob("*.json") if p.name != "model.json")[-1]
    unscored.unlink()
    (copy / "quality" / unscored.name.replace(".json", ".parquet")).unlink()
    tokenized = sorted(p for p in (copy / "tokenize" / "_done").glob("*.json") if p.name != "tokenizer.json")
    tokenized[-1].unlink()
    sorted((copy / "sources" / "_done").glob("*.json"))[0].unlink()
    shutil.rmtree(copy / "shards")
    (copy / "manifest.json").unlink()
    proc = run_module("dataprep", f"output_dir={copy}", *CORPUS_OVERRIDES)
    n = len(list((copy / "extract" / "_done").glob("*.json")))
    assert f"[extract] {n - 1}/{n} tasks already done" in proc.stdout
    assert f"[quality] {n - 1}/{n} tasks already done" in proc.stdout
    assert {p.name: sha256_file(p) for p in (copy / "quality").glob("*.parquet")} == scored
    assert f"[tokenize] {len(tokenized) - 1}/{len(tokenized)} tasks already done" in proc.stdout
    n = len(list((copy / "sources" / "_done").glob("*.json")))
    assert f"[sources] {n - 1}/{n} tasks already done" in proc.stdout
    assert _shard_files(copy) == before


def _shard_files(corpus):
    """Every file of the shard set the manifest names, by name: its checksum."""
    folder = corpus / json.loads((corpus / "manifest.json").read_text())["shard_set"]
    return {p.name: sha256_file(p) for p in folder.iterdir()}


def test_missing_input_folder_is_a_clear_error(tmp_path):
    proc = run_module("dataprep", f"ingest.input_dir={tmp_path}/nowhere", f"output_dir={tmp_path}/o", check=False)
    assert proc.returncode != 0
    assert "ingest.input_dir" in proc.stderr + proc.stdout


def test_a_wrong_value_stops_the_job_before_any_work(tmp_path):
    for bad, message in (("dedup.threshold=1.5", "dedup.threshold=1.5: must be in (0, 1)"),
                         ("quality.selection=best", "quality.selection='best'"),
                         ("mixture.anchor=books9", "mixture.anchor='books9' is not one of mixture.sources")):
        proc = run_module("dataprep", bad, f"output_dir={tmp_path}/o", check=False, timeout=120)
        assert proc.returncode != 0 and message in proc.stderr + proc.stdout, bad
        assert not (tmp_path / "o").exists() and "tasks done" not in proc.stdout


def test_a_failed_task_fails_the_job_and_the_rerun_runs_only_it(corpus, tmp_path):
    """One extract task cannot write its output (a folder sits where its Parquet file goes): the
    job stops with an error and writes no manifest; once the fault is gone the rerun runs only
    that task and ends byte-identical to the uninterrupted run."""
    out = tmp_path / "corpus"
    shutil.copytree(corpus, out)
    tasks = sorted(p.stem for p in (out / "extract" / "_done").glob("*.json"))
    victim = tasks[len(tasks) // 2]
    (out / "extract" / "_done" / f"{victim}.json").unlink()
    blocker = out / "extract" / f"{victim}.parquet"
    blocker.unlink()
    blocker.mkdir()
    (blocker / "keep").write_text("a folder where the task's output goes")
    (out / "manifest.json").unlink()
    failed = run_module("dataprep", f"output_dir={out}", *CORPUS_OVERRIDES, check=False)
    assert failed.returncode != 0 and not (out / "manifest.json").exists()
    assert not (out / "extract" / "_done" / f"{victim}.json").exists()
    assert "IsADirectoryError" in failed.stdout + failed.stderr
    shutil.rmtree(blocker)
    rerun = run_module("dataprep", f"output_dir={out}", *CORPUS_OVERRIDES)
    assert f"[extract] {len(tasks) - 1}/{len(tasks)} tasks already done" in rerun.stdout
    assert _shard_files(out) == _shard_files(corpus)
    for pattern in ("extract/*.parquet", "extract/dropped/*.parquet", "quality/*.parquet",
                    "quality/model.safetensors"):
        ours = {p.relative_to(out): sha256_file(p) for p in out.glob(pattern)}
        assert ours and ours == {p.relative_to(corpus): sha256_file(p) for p in corpus.glob(pattern)}, pattern
