"""The corpus job end to end on the real sample WARCs."""

import json
import logging
import re
import shutil
from collections import Counter

import pyarrow.parquet as pq
import pytest
import ray
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tokenizers import Tokenizer

from conftest import CORPUS_OVERRIDES, REPO, SHARED_DATA, run_module
from dataprep import pipeline
from dataprep.config import register
from dataprep.dedup import normalize
from dataprep.shards import IndexedShard, sha256_file, shard_lineage, shard_prefix
from dataprep.tasks import RerunMismatch

register()

STAGES = ["extract", "language", "filter", "quality", "dedup", "decontam", "tokenize", "holdout"]
CRAWL_CHAIN = STAGES[:5]  # each of these reads the one before


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
    for a, b in zip(CRAWL_CHAIN[:-1], CRAWL_CHAIN[1:]):
        assert stages[a]["docs_out"] == stages[b]["docs_in"], (a, b)
    # decontam reads the crawl (dedup's output) and every other mixture source's documents;
    # tokenize reads what decontam kept of each
    manifest = json.loads((corpus / "manifest.json").read_text())
    crawl = next(n for n, s in manifest["sources"].items() if s["kind"] == "crawl")
    by_source = stages["tokenize"]["by_source"]
    clean = stages["decontam"]["by_source"]
    assert clean[crawl]["docs_in"] == stages["dedup"]["docs_out"]
    assert len(by_source) >= 3 and set(by_source) == set(clean) == set(manifest["sources"])
    for name, s in stats["sources"].items():
        assert s["docs_in"] == s["docs_out"] + sum(s["dropped"].values()), name
        assert clean[name]["docs_in"] == s["docs_out"]
    for name, c in clean.items():
        assert c["docs_in"] == c["docs_out"] + c["contaminated"]  # mode drop
        assert by_source[name] == c["docs_out"] > 0
    assert stages["decontam"]["docs_in"] == sum(c["docs_in"] for c in clean.values())
    assert stages["tokenize"]["docs_in"] == sum(by_source.values()) == stages["decontam"]["docs_out"]
    sets = stages["decontam"]["sets"]
    assert sets["lambada"]["examples"] == 5153 and sets["wikitext2_test"]["indexed_examples"] > 50
    assert stages["decontam"]["index"]["rows"] >= sets["lambada"]["ngrams"] + sets["wikitext2_test"]["ngrams"]
    assert stages["holdout"]["docs_in"] == stages["tokenize"]["docs_out"]
    held = stages["holdout"]["by_source"]
    for name, h in held.items():  # the mixture plans the documents not held out, nor sharing text with them
        v = manifest["validation"]["sources"][name]
        assert h["documents"] == by_source[name]
        assert (h["held_out"], h["overlaps_held_out"]) == (v["documents"], v["overlapping_documents"])
        assert manifest["sources"][name]["source_documents"] == h["documents"] - h["held_out"] - h["overlaps_held_out"]
        assert h["held_out"] == max(1, -(-h["documents"] // 20))  # validation.fraction 0.05, min 1
    assert stages["extract"]["docs_in"] > 200  # responses + conversions of the sample archives
    assert stages["extract"]["dropped"]["not_html"] > 0  # images, PDFs, robots.txt ...
    assert stages["filter"]["dropped"].get("too_short", 0) > 0
    assert stages["dedup"]["dropped"]["exact_duplicate"] > 0
    for sizes, dropped in (("exact_group_sizes", "exact_duplicates"), ("cluster_sizes", "near_duplicates")):
        # a group of k documents keeps one: k - 1 duplicates
        assert sum((int(k) - 1) * n for k, n in stages["dedup"][sizes].items()) == stages["dedup"][dropped]
    # reasons the sample never gives are still listed, so a reader sees the checks ran
    assert stages["extract"]["dropped"]["too_large"] == 0 and stats["sources"]["webtext"]["dropped"]["bad_json"] == 0
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
    """Every document of every mixture source, by source, as decontam kept them."""
    docs = {}
    for name in manifest["sources"]:
        rows = [r for p in sorted((corpus / "decontam" / name).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
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
    cleaned = sorted((copy / "decontam" / "_done").glob("*.json"))
    redo = next(p for p in cleaned if p.name.startswith("crawl__"))  # its output: decontam/crawl/<task>.parquet
    redo.unlink()
    (copy / "decontam" / "crawl" / (redo.stem.split("__", 1)[1] + ".parquet")).unlink()
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
    assert f"[decontam] {len(cleaned) - 1}/{len(cleaned)} tasks already done" in proc.stdout
    assert _shard_files(copy) == before


def _shard_files(corpus):
    """Every file of the shard set the manifest names, by name: its checksum."""
    folder = corpus / json.loads((corpus / "manifest.json").read_text())["shard_set"]
    return {p.name: sha256_file(p) for p in folder.iterdir()}


@pytest.fixture
def ray_here():
    """A local Ray in this process, so that the job runs here (its Ray session uses this one)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20,
             logging_level=logging.WARNING)
    yield
    ray.shutdown()


def job_config(*overrides: str):
    """The corpus job's config as `python -m dataprep <overrides>` composes it (conftest's data)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return OmegaConf.to_object(compose(config_name="dataprep", overrides=[f"shared_data={SHARED_DATA}", *overrides]))


def test_a_rerun_skips_what_is_unchanged_and_redoes_what_a_changed_setting_shapes(corpus, tmp_path, ray_here, caplog):
    out = tmp_path / "corpus"
    shutil.copytree(corpus, out)
    job = [f"output_dir={out}", *CORPUS_OVERRIDES]
    before = json.loads((out / "stats.json").read_text())["stages"]
    markers = lambda: {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("_done/*.json")}  # noqa: E731
    made = markers()

    # Nothing changed (and the output folder moved): every task and driver step is skipped.
    with caplog.at_level(logging.INFO, logger="dataprep"):
        pipeline.run(job_config(*job))
    assert "tasks done" not in caplog.text and "other settings" not in caplog.text
    for stage in ("extract", "quality", "exact_hash", "minhash", "lsh", "clusters", "resolve", "filter", "sources",
                  "decontam", "tokenize", "holdout"):
        assert re.search(rf"\[{stage}\] (\d+)/\1 tasks already done, skipped", caplog.text), stage
    assert "[quality] model already done, skipped" in caplog.text and "[tokenize] tokenizer already done" in caplog.text
    assert markers() == made

    # rerun=strict and another filters.min_chars: the job stops before any work, naming the key.
    with pytest.raises(RerunMismatch, match=r"\[extract\] tasks .* \(filters\.min_chars: 200 -> 1000\)"):
        pipeline.run(job_config(*job, "rerun=strict", "filters.min_chars=1000"))
    assert markers() == made

    # rerun=auto (the default): the filters run again, and every stage after them; one line says so.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dataprep"):
        after = pipeline.run(job_config(*job, "filters.min_chars=1000"))["stages"]
    said = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("[extract] 9/9 tasks were made with other settings or inputs "
                                                 "(filters.min_chars: 200 -> 1000)")
    assert after["filter"]["dropped"]["too_short"] > before["filter"]["dropped"]["too_short"]
    assert after["filter"]["docs_out"] < before["filter"]["docs_out"]
    assert after["dedup"]["docs_in"] == after["quality"]["docs_out"] < before["quality"]["docs_out"]
    assert {k: after["extract"][k] for k in ("docs_in", "docs_out", "dropped")} == \
        {k: before["extract"][k] for k in ("docs_in", "docs_out", "dropped")}  # what the filters do not shape
    remade = {str(p.parent.parent) for p, mtime in markers().items() if mtime != made.get(p)}
    assert {"extract", "quality", "dedup", "tokenize"} <= remade and "sources" not in remade


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
