"""Decontamination against the real evaluation sets (LAMBADA, WikiText-2 test): passages planted in
real web documents are found, whatever their case and punctuation; short common phrases are not.
The stage runs on Ray with the index shipped through the object store, and shows its progress."""

import dataclasses
import io
import json
import os
import re
import sys

import pyarrow.parquet as pq
import pytest
import ray
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, SHARED_DATA
from dataprep import mixture
from dataprep.config import DataprepConfig, DecontamConfig, EvalSetConfig, MixtureSourceConfig, register
from dataprep.decontam import build_index
from dataprep.documents import new_document, write_documents
from dataprep.fingerprint import Fingerprint, file_identity
from dataprep.layout import CorpusLayout
from dataprep.readers import glob_files, read_jsonl
from dataprep.shingling import word_ngrams64, wordhash_shingles
from dataprep.stages import StageInputs, decontam, sources
from dataprep.tasks import task_progress

register()
SETS = {"lambada": EvalSetConfig(kind="jsonl", paths=[str(SHARED_DATA / "eval" / "lambada_test.jsonl")]),
        "wikitext2_test": EvalSetConfig(kind="text", paths=[str(SHARED_DATA / "reference" / "wikitext-2_test.txt")],
                                        split="headings", placeholder="<unk>")}


def _decontam_config(**changes) -> DecontamConfig:
    return DecontamConfig(**{"sets": SETS, "example_ids": 3, **changes})


@pytest.fixture(scope="module")
def index(shared_data):
    cfg = _decontam_config()
    ids = {name: [] for name in SETS}
    built, info = build_index({n: decontam.eval_texts(cfg, n, ids[n]) for n in SETS}, cfg.ngram,
                              {"wikitext2_test": "<unk>"})
    return built, info, ids


def _lambada(i: int) -> str:
    return next(row["text"] for n, row in read_jsonl(SHARED_DATA / "eval" / "lambada_test.jsonl") if n == i)


def _wikitext_paragraph() -> str:
    """A paragraph of a WikiText-2 test article without <unk>, as a web page would print it: no
    WikiText tokenization (' @-@ ', ' , '), other case."""
    text = (SHARED_DATA / "reference" / "wikitext-2_test.txt").read_text(encoding="utf-8")
    para = next(p for p in text.split("\n") if len(p.split()) > 80 and "<unk>" not in p and " @-@ " in p)
    web = para.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" , ", ", ").replace(" . ", ". ")
    return web.upper().strip()


def _web_documents(n: int) -> list[dict]:
    """Real C4 documents (the sample's JSON lines)."""
    src = MixtureSourceConfig(kind="jsonl")
    docs = [d for path in sorted(glob_files([str(SHARED_DATA / "text" / "olmo_c4-sample.*.json.gz")]))
            for d in mixture.read_source_file(path, "web", src)]
    return docs[:n]


@pytest.fixture(scope="module")
def planted():
    """Real web documents, four of them changed: a LAMBADA passage and a WikiText-2 test paragraph
    planted in the middle of two; 12 consecutive words of a LAMBADA passage (one short of an
    n-gram) and common phrases in the other two."""
    docs = _web_documents(12)
    lambada, wiki = _lambada(100), _wikitext_paragraph()
    twelve = " ".join(re.findall(r"\w+", _lambada(200))[10:22])
    half = len(docs[1]["text"]) // 2
    docs[1]["text"] = docs[1]["text"][:half] + "\n" + lambada + "\n" + docs[1]["text"][half:]
    docs[4]["text"] = docs[4]["text"] + "\n\n" + wiki
    docs[7]["text"] = docs[7]["text"] + " " + twelve + "."
    docs[9]["text"] = ("He said that he did not know what to do. She looked at him and smiled. "
                       "It was the first time in a long time. " + docs[9]["text"])
    return docs, {1: "lambada", 4: "wikitext2_test"}


def test_index_holds_the_sets_and_says_its_size(index):
    built, info, ids = index
    assert info["lambada"]["examples"] == 5153 == len(ids["lambada"])
    assert info["wikitext2_test"]["examples"] == len(ids["wikitext2_test"]) >= 60
    assert built.hashes.dtype.name == "uint64" and (built.hashes[1:] >= built.hashes[:-1]).all()
    assert built.nbytes == 14 * len(built.hashes)  # hash 8 + set 2 + example 4 bytes a row
    assert len(built.hashes) >= info["lambada"]["ngrams"] + info["wikitext2_test"]["ngrams"]


def test_planted_passages_are_dropped_and_common_phrases_kept(index, planted, tmp_path):
    built, _, ids = index
    docs, expected = planted
    path = tmp_path / "docs.parquet"
    write_documents(path, docs)
    kept, dropped = tmp_path / "kept.parquet", tmp_path / "dropped.parquet"
    s = decontam.decontam_task(str(path), "drop", str(kept), str(dropped), 3, built)
    gone = {r["id"]: r for r in pq.read_table(dropped).to_pylist()}
    assert set(gone) == {docs[i]["id"] for i in expected}
    assert {r["drop_reason"] for r in gone.values()} == {"contaminated"}
    assert [r["id"] for r in pq.read_table(kept).to_pylist()] == [d["id"] for i, d in enumerate(docs) if i not in expected]
    assert s["docs_in"] == 12 and s["docs_out"] == 10 and s["dropped"] == {"contaminated": 2} and s["contaminated"] == 2
    for i, name in expected.items():
        assert s["sets"][name]["documents"] == 1 and s["sets"][name]["document_ids"] == [docs[i]["id"]]
        assert gone[docs[i]["id"]]["contamination"] == name
    assert s["sets"]["lambada"]["examples"] == [100]  # the passage planted, by its number in the set
    assert len(s["sets"]["wikitext2_test"]["examples"]) == 1


def test_mark_mode_keeps_and_flags(index, planted, tmp_path):
    built, _, _ = index
    docs, expected = planted
    path = tmp_path / "docs.parquet"
    write_documents(path, docs)
    s = decontam.decontam_task(str(path), "mark", str(tmp_path / "k.parquet"), str(tmp_path / "d.parquet"), 3, built)
    rows = pq.read_table(tmp_path / "k.parquet").to_pylist()
    assert len(rows) == 12 and pq.read_table(tmp_path / "d.parquet").num_rows == 0
    assert {r["id"]: r["contamination"] for r in rows if r["contamination"]} == {docs[i]["id"]: n for i, n in expected.items()}
    assert s["contaminated"] == 2 and s["dropped"] == {} and s["docs_out"] == 12


def test_an_ngram_never_spans_two_documents_nor_a_placeholder(index):
    built, _, _ = index
    words = re.findall(r"\w+", _lambada(300))
    assert len(words) >= 26
    # The passage's first 13 words cut 6 | 7 across two documents of one batch: no match...
    texts = ["unrelated words here " + " ".join(words[:6]), " ".join(words[6:13]) + " and more", " ".join(words[:13])]
    t, s, e = built.matches(texts)
    assert set(t.tolist()) == {2} and set(e.tolist()) == {300}  # ...while the whole 13 match
    # WikiText's <unk> stands for an unknown word: a run of them matches nothing.
    t, _, _ = built.matches(["<unk> " * 40, "unk " * 40])
    assert len(t) == 0


def test_ngram_hashes_of_short_texts():
    """A batch whose texts hold fewer words than one n-gram (the rolling window had none)."""
    hashes, counts = word_ngrams64(["one two three", "", "four"], 13)
    assert len(hashes) == 0 and counts.tolist() == [0, 0, 0]
    shingles, counts = wordhash_shingles(["one two three"], 5)  # dedup: one shingle of all its words
    assert counts.tolist() == [1] and len(shingles) == 1
    hashes, counts = word_ngrams64(["A b, C d", "a B c D e"], 4)
    assert counts.tolist() == [1, 2] and hashes[0] == hashes[1]  # case and punctuation are not words


def test_the_same_files_spelled_otherwise_redo_nothing(tmp_path, monkeypatch):
    """A set's files named by a relative path (CCP_SHARED_DATA unset) or an absolute one make
    the same fingerprints; another file does not."""
    monkeypatch.chdir(REPO)
    relative = {n: dataclasses.replace(s, paths=[os.path.relpath(p, REPO) for p in s.paths]) for n, s in SETS.items()}
    other = tmp_path / "lambada.jsonl"
    other.write_text('{"text": "a passage that is not in the set"}\n')

    def digests(sets):
        inputs = StageInputs(DataprepConfig(decontam=_decontam_config(sets=sets)), {}, {}, {},
                             _memo={sources.NAME: {"crawl": {"crawl": Fingerprint({}, {"file": "x"})}}})
        return {n: {t: fp.digest for t, fp in files.items()} for n, files in decontam.fingerprints(inputs).items()}
    assert digests(relative) == digests(SETS)
    assert digests({**SETS, "lambada": dataclasses.replace(SETS["lambada"], paths=[str(other)])}) != digests(SETS)


def test_config_values_are_checked_by_key(tmp_path):
    with pytest.raises(ValueError, match="decontam.mode='erase'"):
        DecontamConfig(mode="erase", sets=SETS)
    with pytest.raises(FileNotFoundError, match="decontam.sets.mmlu.paths"):
        DecontamConfig(sets={"mmlu": EvalSetConfig(paths=[str(tmp_path / "none*.jsonl")])})
    DecontamConfig(enabled=False, sets={"mmlu": EvalSetConfig(paths=[str(tmp_path / "none*.jsonl")])})


def test_the_shipped_config_trains_on_no_evaluation_set(shared_data):
    """conf/dataprep.yaml decontaminates against LAMBADA and WikiText-2's test split, and no
    mixture source reads an evaluation set's file."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg: DataprepConfig = OmegaConf.to_object(compose(config_name="dataprep"))
    d = cfg.decontam
    assert d.enabled and d.mode == "drop" and d.ngram == 13 and set(d.sets) == {"lambada", "wikitext2_test"}
    eval_files = {p.resolve() for s in d.sets.values() for p in glob_files(s.paths)}
    train_files = {p.resolve() for s in cfg.mixture.sources.values() for p in glob_files(s.paths)}
    assert len(eval_files) == 2 and not eval_files & train_files


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal():
    shown, hidden = _Terminal(), io.StringIO()
    for stream in (shown, hidden):
        with task_progress("tokenize", 4, 1, stream) as bar:
            bar.update(2)
            bar.refresh()  # as it redraws every 0.1 s at most
    # done / total, the rate and the time left
    assert re.search(r"tokenize: +75%.* 3/4 \[00:00<00:00, +[0-9.]+task/s\]", shown.getvalue()), shown.getvalue()
    assert hidden.getvalue() == ""


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


def test_stage_on_ray_drops_counts_per_set_and_resumes(ray_local, planted, tmp_path, monkeypatch):
    """Two sources (a crawl file, a curated file holding a WikiText-2 test article itself): the
    stage's tasks share one index from the object store; stats.json's entry counts each set with
    ids, each source; a rerun skips every task and reports the same."""
    docs, _ = planted
    layout = CorpusLayout(tmp_path / "corpus")
    crawl, curated = tmp_path / "crawl.parquet", tmp_path / "wiki.parquet"
    write_documents(crawl, docs)
    wiki = SETS["wikitext2_test"]
    articles = list(mixture.read_source_file(glob_files(wiki.paths)[0], "wikipedia", wiki.as_source()))
    write_documents(curated, [new_document("wiki/a", articles[5]["text"]), new_document("wiki/b", "A short page.")])
    cfg = DataprepConfig(decontam=_decontam_config())
    documents = {"crawl": {"crawl": str(crawl)}, "wikipedia": {"wiki": str(curated)}}
    # what shapes the documents before the stage: here, the files themselves (no earlier stage ran)
    before = {name: {task: Fingerprint({}, {"file": file_identity(f)}) for task, f in files.items()}
              for name, files in documents.items()}
    inputs = StageInputs(cfg, {}, {}, {sources.NAME: documents}, _memo={sources.NAME: before})
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    outputs, stats = decontam.run(layout, inputs)
    monkeypatch.undo()
    # the progress bar, on a terminal: tasks done of 2, time spent < time left, documents
    assert re.search(r"decontam: +\d+%.* [0-2]/2 \[\d\d:\d\d<.*docs=", terminal.getvalue()), terminal.getvalue()
    s = stats["stages"]["decontam"]
    assert outputs == {"crawl": {"crawl": layout.documents("decontam", "crawl", "crawl")},
                       "wikipedia": {"wiki": layout.documents("decontam", "wiki", "wikipedia")}}
    assert [r["id"] for r in pq.read_table(outputs["wikipedia"]["wiki"]).to_pylist()] == ["wiki/b"]
    assert s["by_source"] == {"crawl": {"docs_in": 12, "docs_out": 10, "contaminated": 2},
                              "wikipedia": {"docs_in": 2, "docs_out": 1, "contaminated": 1}}
    assert s["dropped"] == {"contaminated": 3} and s["index"]["bytes"] > 1_000_000
    lam, wt = s["sets"]["lambada"], s["sets"]["wikitext2_test"]
    assert (lam["documents"], lam["examples_hit"], lam["example_ids"]) == (1, 1, ["lambada/lambada_test.jsonl#100"])
    assert wt["documents"] == 2 and wt["document_ids"] == [docs[4]["id"], "wiki/a"]
    assert "wikitext2_test/wikitext-2_test.txt#5" in wt["example_ids"]

    def no_index(*args, **kwargs):
        raise AssertionError("a rerun with every task done built the index")
    monkeypatch.setattr(decontam, "build_index", no_index)
    again, stats_again = decontam.run(layout, inputs)
    assert again == outputs and json.dumps(stats_again["stages"]["decontam"]["sets"]) == json.dumps(s["sets"])
    assert stats_again["stages"]["decontam"]["index"] == s["index"]
