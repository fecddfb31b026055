"""The weighted mixture: epochs from weights and sizes, seeded subsets and order, source readers,
and the demo mixture the corpus job writes."""

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import REPO, damaged_jsonl, run_module
from dataprep import mixture
from dataprep.config import DataprepConfig, MixtureConfig, MixtureSourceConfig, register
from dataprep.stages.sources import source_task
from dataprep.shards import shard_lineage
from dataprep.verify import verify

register()


def _lengths(seed, n, lo=50, hi=3000):
    return np.random.default_rng(seed).integers(lo, hi, size=n)


# --- the plan ----------------------------------------------------------------------------------

def test_document_copies_whole_and_fractional_epochs():
    ls = _lengths(0, 400)
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    np.testing.assert_array_equal(mixture.document_copies(ls, 0.0, rng()), 0)
    np.testing.assert_array_equal(mixture.document_copies(ls, 1.0, rng()), 1)
    np.testing.assert_array_equal(mixture.document_copies(ls, 3.0, rng()), 3)
    for epochs in (0.25, 0.5, 1.37, 3.4):
        c = mixture.document_copies(ls, epochs, rng())
        assert set(np.unique(c)) <= {int(epochs), int(epochs) + 1}
        # whole documents, the subset closest to the target: off by at most half the largest one
        assert abs((c * ls).sum() - epochs * ls.sum()) <= ls.max() / 2
    a = mixture.document_copies(ls, 0.5, np.random.default_rng(1))
    b = mixture.document_copies(ls, 0.5, np.random.default_rng(2))
    assert not np.array_equal(a, b)  # the subset is the seed's


def test_plan_hits_weights_and_reports_epochs():
    lengths = {"web": _lengths(1, 2000), "books": _lengths(2, 300, 2000, 8000), "wiki": _lengths(3, 80)}
    weights = {"web": 6.0, "books": 2.0, "wiki": 2.0}  # normalized to 0.6 / 0.2 / 0.2
    for size in ({"total_tokens": 2_000_000}, {"anchor": "web", "anchor_epochs": 0.44}):
        p = mixture.plan(lengths, weights, seed=3, **size)
        summary = p.summary()
        total = sum(s["tokens"] for s in summary.values())
        for name, s in summary.items():
            assert s["target_weight"] == pytest.approx(weights[name] / 10)
            assert abs(s["achieved_weight"] - s["target_weight"]) < 0.01, (size, name)
            assert s["achieved_weight"] == pytest.approx(s["tokens"] / total, abs=1e-6)
            # target_tokens is written rounded to a whole token, epochs to 7 significant digits
            slack = (0.5 + 1e-7 * s["target_tokens"]) / s["source_tokens"]
            assert s["epochs"] == pytest.approx(s["target_tokens"] / s["source_tokens"], rel=0, abs=slack)
            assert s["achieved_epochs"] == pytest.approx(s["tokens"] / s["source_tokens"], rel=1e-5)
            assert "note" not in s
        if "total_tokens" in size:
            assert abs(total - 2_000_000) < 10_000
        else:
            assert summary["web"]["epochs"] == pytest.approx(0.44)
    # wiki is small for its weight: upsampled, every document at least 3 times at ~3.x epochs
    wiki = p.sources[2]
    assert wiki.epochs > 3 and wiki.copies.min() >= 3
    # the order holds every copy exactly once
    for i, s in enumerate(p.sources):
        np.testing.assert_array_equal(np.bincount(p.order_doc[p.order_source == i], minlength=s.documents), s.copies)


def test_order_is_a_seeded_shuffle_across_sources():
    lengths = {"a": _lengths(1, 500), "b": _lengths(2, 500), "c": _lengths(3, 500)}
    weights = {"a": 1, "b": 1, "c": 1}
    p1 = mixture.plan(lengths, weights, total_tokens=10**6, seed=5)
    p2 = mixture.plan(lengths, weights, total_tokens=10**6, seed=5)
    p3 = mixture.plan(lengths, weights, total_tokens=10**6, seed=6)
    np.testing.assert_array_equal(p1.order_source, p2.order_source)
    np.testing.assert_array_equal(p1.order_doc, p2.order_doc)
    assert not np.array_equal(p1.order_source, p3.order_source)
    # interleaved, not source after source: every tenth of the stream holds all three sources
    for part in np.array_split(p1.order_source, 10):
        assert set(part.tolist()) == {0, 1, 2}
    # a source's subset does not depend on the other sources
    p4 = mixture.plan({"a": lengths["a"], "b": lengths["b"]}, {"a": 1, "b": 1}, total_tokens=666_667, seed=5)
    np.testing.assert_array_equal(p4.sources[0].copies, p1.sources[0].copies)


def test_a_source_too_coarse_for_its_share_says_why():
    p = mixture.plan({"web": _lengths(1, 1000), "one_book": np.array([300_000])},
                     {"web": 0.9, "one_book": 0.1}, anchor="web", anchor_epochs=1.0)
    s = p.summary()
    assert s["one_book"]["documents"] in (0, 1)
    assert abs(s["one_book"]["achieved_weight"] - 0.1) > 0.01
    assert "coarse" in s["one_book"]["note"] and "median 300000 tokens" in s["one_book"]["note"]
    assert "note" in s["web"] or abs(s["web"]["achieved_weight"] - 0.9) <= 0.01


# --- configuration -------------------------------------------------------------------------------

def _text_source(shared_data, **kw):
    kw = {"kind": "text", **kw}
    return MixtureSourceConfig(paths=[str(shared_data / "reference" / "wikitext-2_valid.txt")], **kw)


def test_a_wrong_mixture_config_names_the_wrong_key(shared_data):
    ok = {"crawl": MixtureSourceConfig(kind="crawl", weight=0.5), "wiki": _text_source(shared_data, weight=0.5)}
    MixtureConfig(sources=ok, anchor="crawl", anchor_epochs=1.0)
    MixtureConfig(sources=ok, total_tokens=1000)
    assert MixtureConfig().size() == (None, "crawl", 1.0)  # no sources: the crawl, one epoch
    bad = [
        (dict(sources=ok), "mixture.total_tokens"),
        (dict(sources=ok, total_tokens=10, anchor="crawl", anchor_epochs=1.0), "mixture.total_tokens"),
        (dict(sources=ok, anchor="books", anchor_epochs=1.0), "mixture.anchor='books'"),
        (dict(sources=ok, anchor="crawl"), "mixture.anchor_epochs"),
        (dict(sources={**ok, "wiki": _text_source(shared_data, kind="txt")}, total_tokens=1), "mixture.sources.wiki.kind"),
        (dict(sources={**ok, "wiki": _text_source(shared_data, split="para")}, total_tokens=1), "mixture.sources.wiki.split"),
        (dict(sources={**ok, "wiki": _text_source(shared_data, weight=0.0)}, total_tokens=1), "mixture.sources.wiki.weight"),
    ]
    for kwargs, key in bad:
        with pytest.raises(ValueError, match=re.escape(key)):
            MixtureConfig(**kwargs)
    nowhere = MixtureSourceConfig(kind="text", paths=[str(shared_data / "nowhere" / "*.txt")])
    with pytest.raises(FileNotFoundError, match=r"mixture\.sources\.x\.paths"):
        MixtureConfig(sources={"x": nowhere}, total_tokens=1)


def test_shipped_mixture_composes_and_a_mistyped_source_key_fails():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = OmegaConf.to_object(compose(config_name="dataprep"))
        assert isinstance(cfg, DataprepConfig)
        sources = cfg.mixture.sources
        assert len(sources) >= 3 and [s.kind for s in sources.values()].count("crawl") == 1
        assert all(isinstance(s, MixtureSourceConfig) and s.weight > 0 for s in sources.values())
        with pytest.raises(ConfigCompositionException) as e:
            compose(config_name="dataprep", overrides=["mixture.sources.books.wieght=0.3"])
        assert "wieght" in str(e.value) + str(e.value.__cause__)
        with pytest.raises(ConfigCompositionException) as e:
            compose(config_name="dataprep", overrides=["mixture.sources.books.weight=lots"])
        assert "weight" in str(e.value) + str(e.value.__cause__)


# --- reading sources -------------------------------------------------------------------------------

def test_gutenberg_books_lose_header_and_licence(shared_data):
    s = MixtureSourceConfig(kind="text", strip_gutenberg=True, split="chunks", chunk_chars=20_000)
    for book in sorted((shared_data / "reference").glob("gutenberg_*.txt")):
        raw = book.read_text(encoding="utf-8-sig")
        docs = list(mixture.read_source_file(book, "books", s))
        text = "\n".join(d["text"] for d in docs)
        for gone in ("*** START OF", "*** END OF", "PROJECT GUTENBERG-TM", "FULL LICENSE", "\r"):
            assert gone not in text.upper(), (book.name, gone)
        assert "End of the Project Gutenberg".upper() not in text.upper()
        assert len(text) > 0.8 * len(raw)  # the book itself stays
        assert all(len(d["text"]) < 20_000 + 2_000 for d in docs) and len(docs) > 5
        assert len({d["id"] for d in docs}) == len(docs)
        assert all(d["url"].startswith("file://") and d["drop_reason"] is None for d in docs)
    raw = (shared_data / "reference" / "gutenberg_1342_pride_and_prejudice.txt").read_text(encoding="utf-8-sig")
    assert mixture.strip_gutenberg(raw).startswith("PRIDE AND PREJUDICE")
    assert mixture.strip_gutenberg("no markers here") == "no markers here"


def test_wikitext_splits_into_articles(shared_data):
    s = MixtureSourceConfig(kind="text", split="headings")
    docs = list(mixture.read_source_file(shared_data / "reference" / "wikitext-2_valid.txt", "wiki", s))
    assert len(docs) == 60  # WikiText-2's validation split: 60 articles
    assert docs[0]["text"].startswith("= Homarus gammarus =")
    assert all(d["text"].startswith("= ") and "\n = " not in d["text"].split("\n", 1)[0] for d in docs)
    one = list(mixture.read_source_file(shared_data / "reference" / "wikipedia_taylor_swift.txt", "wiki", s))
    assert len(one) == 1  # no WikiText headings: the file is one article


def test_jsonl_sources_with_nested_fields(shared_data):
    dolma = MixtureSourceConfig(kind="jsonl", url_field="metadata.url")
    docs = list(mixture.read_source_file(shared_data / "text" / "dolma_cc_en_head-0091.jsonl.gz", "web", dolma))
    assert len(docs) == 10 and all(d["text"] and d["url"] and not d["url"].startswith("file:") for d in docs)
    c4 = MixtureSourceConfig(kind="jsonl")  # C4 records carry a url but no id
    docs = list(mixture.read_source_file(shared_data / "text" / "olmo_c4-sample.01.json.gz", "c4", c4))
    assert len(docs) == 10 and docs[3]["id"] == "c4/olmo_c4-sample.01.json.gz#3"
    assert all(d["url"].startswith("http") for d in docs)


def test_a_bad_json_line_is_dropped_and_counted_not_fatal(shared_data, tmp_path):
    path, rows = damaged_jsonl(shared_data, tmp_path)
    kept, dropped = tmp_path / "kept.parquet", tmp_path / "dropped.parquet"
    stats = source_task(str(path), "web", MixtureSourceConfig(kind="jsonl"), str(kept), str(dropped))
    assert (stats["docs_in"], stats["docs_out"], stats["dropped"]) == (len(rows) + 3, len(rows), {"bad_json": 3, "empty": 0, "truncated": 0})
    assert [d["text"] for d in pq.read_table(kept).to_pylist()] == [r["text"] for r in rows]


# --- the demo mixture (the corpus job's default config) ---------------------------------------------

def test_demo_mixture_meets_its_weights(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    sources = manifest["sources"]
    assert len(sources) >= 3 and sum(s["kind"] == "crawl" for s in sources.values()) == 1
    assert sum(s["target_weight"] for s in sources.values()) == pytest.approx(1.0)
    total = manifest["total_tokens"]
    for name, s in sources.items():
        assert abs(s["achieved_weight"] - s["target_weight"]) <= 0.01 or "note" in s, name
        assert s["achieved_weight"] == pytest.approx(s["tokens"] / total, abs=1e-6)
        # target_tokens is the target rounded to a whole token, epochs the exact ratio to 7 digits
        assert abs(s["epochs"] * s["source_tokens"] - s["target_tokens"]) <= 0.5 + 1e-6 * s["target_tokens"], name
    # as conf/dataprep.yaml says: the reference text is subsampled, the curated web upsampled
    assert min(s["epochs"] for s in sources.values()) < 1 < max(s["epochs"] for s in sources.values())
    # the lineage accounts for every source's documents and tokens, copies numbered 0, 1, ...
    rows = _lineage(corpus, manifest)
    for name, s in sources.items():
        mine = [r for r in rows if r["mixture_source"] == name]
        assert len(mine) == s["documents"] and sum(r["tokens"] for r in mine) == s["tokens"]
    copies = {}
    for r in rows:
        copies.setdefault((r["mixture_source"], r["id"]), []).append(r["copy"])
    assert all(sorted(c) == list(range(len(c))) for c in copies.values())
    # sources interleave from the first shard on
    first = pq.read_table(shard_lineage(corpus, manifest["shards"][0])).column("mixture_source").to_pylist()
    assert set(first) == set(sources)
    assert verify(corpus / "manifest.json") == []


def test_jsonl_source_and_token_budget_with_gpt2(shared_data, tmp_path):
    """Another mixture end to end: two crawl files and a JSONL source added by a config file (the
    command line cannot add a typed source), a token budget, GPT-2's tokenizer (uint16 shards)."""
    out = tmp_path / "mix"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c4mix.yaml").write_text(
        "defaults:\n  - dataprep\n  - _self_\n"
        "mixture:\n  anchor: null\n  anchor_epochs: null\n  total_tokens: 60000\n  seed: 11\n"
        "  sources:\n    c4: {kind: jsonl, paths: ['${shared_data}/text/olmo_c4-sample.*.json.gz'], weight: 0.3}\n"
    )
    run_module(
        "dataprep", "--config-dir", str(tmp_path / "conf"), "--config-name", "c4mix",
        f"output_dir={out}", "ingest.patterns=[wget-2024_dolma_sample-*.warc.gz]",
        f"tokenizer.path={shared_data}/tokenizer/gpt2/tokenizer.json",
        "~mixture.sources.books", "~mixture.sources.wikipedia", "~mixture.sources.webtext",
        "mixture.sources.crawl.weight=0.7",
        "quality.enabled=false",  # the classifier is not what this test is about
        "shards.shard_tokens=5000",  # many shards, some a single document longer than that
    )
    m = json.loads((out / "manifest.json").read_text())
    assert m["dtype"] == "uint16" and m["tokenizer"]["vocab_size"] == 50257 and m["tokenizer"]["eod_id"] == 50256
    assert set(m["sources"]) == {"crawl", "c4"} and len(m["sources"]["c4"]["files"]) == 3
    assert m["mixture"]["total_tokens_target"] == 60000 and abs(m["total_tokens"] - 60000) < 3000
    for s in m["sources"].values():
        assert abs(s["achieved_weight"] - s["target_weight"]) <= 0.01 or "note" in s
    assert m["sources"]["c4"]["epochs"] > 1  # 30 short C4 documents for 18k tokens: upsampled
    rows = _lineage(out, m)
    c4 = [r for r in rows if r["mixture_source"] == "c4"]
    assert len(c4) == m["sources"]["c4"]["documents"] and {r["copy"] for r in c4} == {0, 1}
    held = m["validation"]["sources"]["c4"]
    assert held["documents"] == 2  # 5% of 30, rounded up
    assert len({r["id"] for r in c4}) == 30 - held["documents"] - held["overlapping_documents"]  # the others at least once
    assert len(m["shards"]) >= 10 and any(s["documents"] == 1 and s["tokens"] > 5000 for s in m["shards"])
    assert verify(out / "manifest.json") == []


def _lineage(corpus, manifest):
    """The lineage rows of a manifest's training shards, in stream order."""
    return [r for e in manifest["shards"] for r in pq.read_table(shard_lineage(corpus, e)).to_pylist()]
