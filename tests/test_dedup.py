"""Dedup, measured on real documents: signatures equal datasketch's, LSH bands x rows as
datasketch picks them, connected components over node partitions equal scipy's, recall and
false merges on near-duplicates of known Jaccard similarity, collision rates against
1 - (1 - s^r)^b, resumable stages whose decisions no partitioning changes, the standalone
command."""

import gzip
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as connected_components_scipy

from conftest import SHARED_DATA, run_module
from dataprep import dedup, shingling
from dataprep.config import SHINGLE_HASHES, DedupConfig
from dataprep.dedup_components import connected_components
from dataprep.dedup_stages import BAND_RECORD_BYTES, Deduplicator
from dataprep.tasks import RerunMismatch, Reruns

WORD = re.compile(r"\w+")
NGRAM = 5
THRESHOLD = 0.8
MASK64 = (1 << 64) - 1


# --- real documents and controlled near-duplicates -------------------------------------------

def crawl_texts() -> list[str]:
    """The texts of the extracted crawl documents in text/ (Dolma, C4)."""
    texts = []
    for path in sorted((SHARED_DATA / "text").glob("*.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    return texts


def real_word_lists(words_per_doc: int = 300) -> list[list[str]]:
    """Real documents as word lists: crawl documents of 150+ words (cut at words_per_doc), and
    the reference texts (books, Wikipedia, Shakespeare) cut into parts of words_per_doc words."""
    docs = [w[:words_per_doc] for w in (WORD.findall(t.casefold()) for t in crawl_texts()) if len(w) >= 150]
    for path in sorted((SHARED_DATA / "reference").glob("*.txt")):
        words = WORD.findall(path.read_text(encoding="utf-8").casefold())
        docs += [words[i:i + words_per_doc] for i in range(0, len(words) - words_per_doc + 1, words_per_doc)]
    return docs


def shingle_set(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def edited_copy(words: list[str], target: float, rng: random.Random, vocab: list[str]) -> tuple[list[str], float]:
    """A copy of `words` changed by random word edits (60% substitutions, 20% deletions, 20%
    insertions of real words), as many as keep its shingle Jaccard with `words` at or just above
    `target` (at least one edit); returns the copy and its true Jaccard."""
    ops = [(rng.random(), rng.random(), rng.choice(vocab)) for _ in range(len(words))]

    def apply(k: int) -> list[str]:
        out = list(words)
        for kind, where, word in ops[:k]:
            i = int(where * len(out))
            if kind < 0.6:
                out[i] = word
            elif kind < 0.8:
                del out[i]
            else:
                out.insert(i, word)
        return out

    lo, hi = 1, len(ops)  # the most edits whose Jaccard is still >= target (J falls as k grows)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if jaccard(words, apply(mid)) >= target else (lo, mid - 1)
    copy = apply(lo)
    return copy, jaccard(words, copy)


def independent(texts: list[str], limit: float = 0.3) -> list[str]:
    """Texts no two of which have estimated Jaccard above `limit` (real corpora repeat
    themselves: licence footers, boilerplate, mirrored pages), so that each made pair stands alone."""
    sigs = dedup.MinHasher()(texts)
    kept: list[int] = []
    for i in range(len(texts)):
        if not kept or (sigs[kept] == sigs[i]).mean(axis=1).max() <= limit:
            kept.append(i)
    return [texts[i] for i in kept]


def near_duplicate_pairs(n_pairs: int = 600, seed: int = 0) -> list[tuple[str, str, float]]:
    """(text, edited text, true shingle Jaccard) for n_pairs independent real documents, the
    target similarities spread evenly over [0.5, 1)."""
    rng = random.Random(seed)
    docs = real_word_lists()
    rng.shuffle(docs)
    bases = [t.split() for t in independent([" ".join(w) for w in docs[:n_pairs + 200]])[:n_pairs]]
    assert len(bases) == n_pairs
    vocab = sorted({w for d in bases for w in d})
    pairs = []
    for i, words in enumerate(bases):
        copy, sim = edited_copy(words, 0.5 + 0.5 * i / n_pairs, rng, vocab)
        pairs.append((" ".join(words), " ".join(copy), sim))
    return pairs


def write_docs(path: Path, ids: list[str], texts: list[str], **columns) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "text": texts, **columns}), path)
    return str(path)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pairs():
    return near_duplicate_pairs()


def run_dedup(work: Path, docs: dict[str, str], cfg: DedupConfig, reruns: Reruns | None = None) -> dict:
    out = {n: str(work / "out" / f"{n}.parquet") for n in docs}
    dropped = {n: str(work / "out" / "dropped" / f"{n}.parquet") for n in docs}
    return Deduplicator(cfg, work / "work", reruns=reruns).run(docs, out, dropped)


def survivors(out_dir: Path) -> dict[str, str]:
    """id -> the id that survives in its place, for every dropped document."""
    dropped = pa.concat_tables(pq.read_table(p, columns=["id", "duplicate_of"])
                               for p in sorted((out_dir / "dropped").glob("*.parquet")))
    return dict(zip(dropped["id"].to_pylist(), dropped["duplicate_of"].to_pylist()))


# --- signatures and parameters as datasketch computes them ------------------------------------

def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = h * 0xFF51AFD7ED558CCD & MASK64
    h ^= h >> 33
    h = h * 0xC4CEB9FE1A85EC53 & MASK64
    return h ^ (h >> 33)


def wordhash(gram: tuple[str, ...]) -> int:
    """The "wordhash" shingle hash, written from its definition, one n-gram at a time."""
    h = 0xD6E8FEB86659FD93
    for word in gram:
        word_hash = sum(_fmix64(ord(c) | i << 32) for i, c in enumerate(word)) & MASK64
        h = (h * 0x9E3779B97F4A7C15 + word_hash) & MASK64
    return _fmix64(h) >> 32


def grams(text: str, n: int) -> list[tuple[str, ...]]:
    words = WORD.findall(text.casefold())
    return [tuple(words)] if len(words) < n else [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


EDGE_TEXTS = ["", "one", "a b c d e", "Straße ﬁne ẞ İstanbul 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \ud800 x_y 42", "  \n\t "]


@pytest.mark.parametrize("num_perm,seed,n", [(128, 1, 5), (64, 7, 3), (256, 42, 1)])
def test_signatures_equal_datasketch(num_perm, seed, n):
    texts = crawl_texts()[:40] + EDGE_TEXTS
    sha1 = dedup.MinHasher(num_perm, seed, n, "sha1")(texts)
    default = MinHash.bulk([list(shingling.shingles(t, n)) for t in texts], num_perm=num_perm, seed=seed)
    assert np.array_equal(sha1, [m.hashvalues for m in default])  # a default datasketch MinHash
    fast = dedup.MinHasher(num_perm, seed, n, "wordhash")(texts)
    reference = MinHash.bulk([grams(t, n) for t in texts], num_perm=num_perm, seed=seed, hashfunc=wordhash)
    assert np.array_equal(fast, [m.hashvalues for m in reference])
    assert fast.dtype == np.uint32 and len({r.tobytes() for r in fast}) > 40  # not constant


def test_lsh_params_equal_datasketch():
    cases = [(t, n, w) for t in (0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95) for n in (32, 128)
             for w in ((0.5, 0.5), (0.2, 0.8), (0.9, 0.1))] + [(0.8, 256, (0.5, 0.5))]
    for threshold, num_perm, weights in cases:
        expected = _optimal_param(threshold, num_perm, *weights)
        assert dedup.lsh_params(threshold, num_perm, weights) == expected, (threshold, num_perm, weights)


def test_bucket_pairs():
    keys = np.array([7, 3, 7, 9, 3, 7, 5], dtype=np.uint64)
    docs = np.array([40, 11, 12, 13, 10, 41, 14], dtype=np.uint64)
    # bucket 7: {12, 40, 41} -> (12, 40), (12, 41); bucket 3: {10, 11} -> (10, 11)
    assert dedup.bucket_pairs(keys.copy(), docs.copy()).tolist() == [[10, 11], [12, 40], [12, 41]]
    assert dedup.bucket_pairs(keys[:2].copy(), docs[:2].copy()).shape == (0, 2)


def test_distributed_components_equal_scipys(tmp_path, ray_local):
    """Large-star / small-star over 3 node partitions, from 2 edge files that share edges, ends in
    one star per component of scipy's connected components, centred on the component's smallest
    document: a long path in shuffled order (the most rounds), a big star, and a sparse random
    graph of many small components."""
    rng = np.random.default_rng(0)
    names = rng.choice(2**40, size=1000, replace=False).astype(np.uint64) << np.uint64(8)  # like file << 32 | row
    path = rng.permutation(300)
    a = [path[:-1], np.full(150, 300), 451 + rng.integers(0, 549, 400)]
    b = [path[1:], 301 + np.arange(150), 451 + rng.integers(0, 549, 400)]
    a, b = np.concatenate(a), np.concatenate(b)
    a, b = a[a != b], b[a != b]
    lo, hi = np.minimum(names[a], names[b]), np.maximum(names[a], names[b])  # as the lsh stage writes them
    files = {}
    for i, rows in enumerate((slice(0, 700), slice(500, None))):  # edges 500..699 in both
        files[f"e{i}"] = str(tmp_path / f"e{i}.parquet")
        pq.write_table(pa.table({"a": lo[rows], "b": hi[rows]}), files[f"e{i}"])
    result = connected_components(files, tmp_path / "components", 3)

    n, labels = connected_components_scipy(coo_matrix((np.ones(len(a)), (a, b)), shape=(1000, 1000)), directed=False)
    linked = np.unique(np.concatenate([a, b]))
    smallest = {label: names[linked[labels[linked] == label]].min() for label in np.unique(labels[linked])}
    expected = {int(names[v]): int(smallest[labels[v]]) for v in linked if names[v] != smallest[labels[v]]}
    stars = pa.concat_tables(pq.read_table(p) for d in result["parts"] for p in result["last_step"](d))
    node, nbr = stars["node"].to_numpy(), stars["nbr"].to_numpy()
    # Each star edge once from each end; every non-centre document joined to its centre alone.
    assert sorted(zip(node[node > nbr].tolist(), nbr[node > nbr].tolist())) == sorted(expected.items())
    assert sorted(zip(nbr[node < nbr].tolist(), node[node < nbr].tolist())) == sorted(expected.items())
    assert result["edges"] == len(set(zip(lo.tolist(), hi.tolist())))
    assert len(result["parts"]) == 3 and 2 <= result["rounds"] <= 20


def test_survivor_is_highest_quality_then_smallest_id():
    group = np.array([0, 0, 0, 1, 1, 2, 2])
    ids = pa.array(["c", "a", "b", "z", "y", "q", "p"])
    quality = pa.array([0.9, 0.1, 0.9, None, 0.3, None, None], pa.float64())
    survivor = dedup.choose_survivors({"g": group}, ids, quality)
    assert [ids[i].as_py() for i in survivor] == ["b", "b", "b", "y", "y", "p", "p"]


# --- measured on real documents ------------------------------------------------------------------

def test_collision_rate_follows_theory(pairs):
    """The share of pairs that share an LSH bucket, by true Jaccard, against 1 - (1 - s^r)^b."""
    b, r = dedup.lsh_params(THRESHOLD, 128)
    signer = dedup.MinHasher()
    keys_a = dedup.band_keys(signer([a for a, _, _ in pairs]), b, r)
    keys_b = dedup.band_keys(signer([e for _, e, _ in pairs]), b, r)
    collided = (keys_a == keys_b).any(axis=1)
    sim = np.array([s for _, _, s in pairs])
    expected = dedup.collision_probability(sim, b, r)
    lines = [f"LSH b={b} r={r}: Jaccard bin, pairs, collided, theory"]
    for lo in np.arange(0.5, 1.0, 0.05):
        inside = (sim >= lo) & (sim < lo + 0.05)
        if inside.sum() >= 10:
            lines.append(f"  [{lo:.2f}, {lo + 0.05:.2f})  {inside.sum():4d}  {collided[inside].mean():.3f}  "
                         f"{expected[inside].mean():.3f}")
            # Binomial spread of the bin's count, plus slack for the curve's slope across the bin.
            sd = np.sqrt((expected[inside] * (1 - expected[inside])).sum()) / inside.sum()
            assert abs(collided[inside].mean() - expected[inside].mean()) <= 4 * sd + 0.05, "\n".join(lines)
    total_sd = np.sqrt((expected * (1 - expected)).sum())
    lines.append(f"  all: {collided.sum()} collided, theory {expected.sum():.1f} +- {total_sd:.1f}")
    print("\n".join(lines))
    assert abs(collided.sum() - expected.sum()) <= 4 * total_sd + 2, "\n".join(lines)


@pytest.fixture(scope="module")
def near_dup_run(tmp_path_factory, ray_local, pairs):
    """The stages on the pairs (the copies in another file than half their originals), 3 partitions."""
    tmp = tmp_path_factory.mktemp("near")
    rng = random.Random(1)
    files: dict[str, tuple[list[str], list[str]]] = {"f0": ([], []), "f1": ([], [])}
    for i, (text, copy, _) in enumerate(pairs):
        for doc_id, t in ((f"p{i:04d}a", text), (f"p{i:04d}b", copy)):
            ids, texts = files[rng.choice(["f0", "f1"])]
            ids.append(doc_id)
            texts.append(t)
    docs = {n: write_docs(tmp / "in" / f"{n}.parquet", ids, texts) for n, (ids, texts) in files.items()}
    stats = run_dedup(tmp, docs, DedupConfig(partitions=3))
    return stats, survivors(tmp / "out")


@pytest.mark.slow  # a Ray start and a run over 1,200 documents
def test_recall_and_false_merges_on_real_near_duplicates(pairs, near_dup_run):
    stats, survivor = near_dup_run
    sim = np.array([s for _, _, s in pairs])
    merged = np.array([survivor.get(f"p{i:04d}a", f"p{i:04d}a") == survivor.get(f"p{i:04d}b", f"p{i:04d}b")
                       for i in range(len(pairs))])
    high, low = sim >= THRESHOLD + 0.1, sim <= THRESHOLD - 0.1
    similar = sim >= THRESHOLD
    recall, false_merges = merged[high].mean(), merged[low].mean()
    precision = (merged & similar).sum() / max(merged.sum(), 1)
    print(f"\n{len(pairs)} pairs of real documents, threshold {THRESHOLD}: recall {recall:.3f} over "
          f"{high.sum()} pairs with J >= {THRESHOLD + 0.1:.1f}; {false_merges:.3f} merged of {low.sum()} "
          f"pairs with J <= {THRESHOLD - 0.1:.1f}; at the threshold precision {precision:.3f}, recall "
          f"{merged[similar].mean():.3f}; candidate pairs {stats['candidate_pairs']}, edges {stats['edges']}")
    assert high.sum() >= 100 and low.sum() >= 200
    assert recall >= 0.95
    assert false_merges < 0.05
    # A survivor is never dropped, and every drop names a kept survivor of its own pair.
    assert not set(survivor.values()) & set(survivor)
    assert all(d[:5] == s[:5] for d, s in survivor.items())


@pytest.mark.slow
def test_stats_explain_every_document(near_dup_run, pairs):
    stats, survivor = near_dup_run
    assert stats["docs_in"] == 2 * len(pairs)
    assert stats["docs_in"] == stats["docs_out"] + stats["exact_duplicates"] + stats["near_duplicates"]
    assert stats["dropped"] == {"near_duplicate": stats["near_duplicates"]}
    assert stats["near_duplicates"] == len(survivor)
    assert stats["clusters"] == len(set(survivor.values())) and stats["largest_cluster"] == 2
    assert stats["cluster_sizes"] == {"2": stats["clusters"]}  # the report's cluster-size distribution
    assert (stats["bands"], stats["rows"], stats["partitions"]) == (9, 13, 3)


# --- resumable, bounded, deterministic ---------------------------------------------------------------

def small_corpus(folder: Path, n_files: int = 3, per_file: int = 60) -> dict[str, str]:
    """Real crawl documents in n_files files, with exact copies (case and spaces changed) and
    near copies (a word changed: Jaccard >= 0.95) of some of them, in other files than their
    originals."""
    texts = [t for t in crawl_texts() if len(t.split()) >= 200][:n_files * per_file]
    files: dict[str, tuple[list[str], list[str]]] = {f"f{i}": ([], []) for i in range(n_files)}
    for i, text in enumerate(texts):
        ids, docs = files[f"f{i % n_files}"]
        ids.append(f"d{i:04d}")
        docs.append(text)
        if i % 10 == 0:
            files[f"f{(i + 1) % n_files}"][0].append(f"x{i:04d}")
            files[f"f{(i + 1) % n_files}"][1].append("  " + text.upper())
        if i % 10 == 5:
            words = text.split()
            words[len(words) // 2] = "changed"
            files[f"f{(i + 2) % n_files}"][0].append(f"n{i:04d}")
            files[f"f{(i + 2) % n_files}"][1].append(" ".join(words))
    return {n: write_docs(folder / f"{n}.parquet", ids, docs) for n, (ids, docs) in files.items()}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (p.suffix == ".parquet" or p.name == "plan.json")}


def test_rerun_redoes_only_deleted_tasks_and_ends_identical(tmp_path, ray_local):
    docs = small_corpus(tmp_path / "in")
    budget = 32 * 1024  # bytes: 216 documents x 9 bands x 48 bytes need 3 partitions
    cfg = DedupConfig(memory_budget_mb=budget / 2**20)
    stats = run_dedup(tmp_path, docs, cfg)
    texts = [t for f in docs.values() for t in pq.read_table(f)["text"].to_pylist()]
    assert stats["exact_duplicates"] == len(texts) - len({dedup.normalize(t) for t in texts})  # 18 made, 2 real
    assert stats["near_duplicates"] >= 18
    assert stats["partitions"] == math.ceil(len(texts) * 9 * BAND_RECORD_BYTES / budget) == 3
    records = [json.loads(p.read_text())["records"] for p in (tmp_path / "work" / "edges" / "_done").glob("*.json")]
    assert max(records) * BAND_RECORD_BYTES <= 1.3 * budget  # hash partitions come out even

    before = snapshot(tmp_path)
    markers = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").rglob("_done/*.json")}
    work = tmp_path / "work"
    redo = [work / "signatures" / "_done" / "f1.json", work / "edges" / "_done" / "00001.json"]
    for p in redo + [work / "signatures" / "f1.parquet", work / "edges" / "00001.parquet",
                     *work.glob("bands/*/f1.parquet")]:
        p.unlink()
    run_dedup(tmp_path, docs, cfg)
    assert snapshot(tmp_path) == before
    for marker, mtime in markers.items():
        assert (marker.stat().st_mtime_ns != mtime) == (marker in redo), marker

    # Other settings never mix with these files: strict stops before any work, naming the key ...
    with pytest.raises(RerunMismatch, match=r"dedup\.threshold: 0\.8 -> 0\.7"):
        run_dedup(tmp_path, docs, DedupConfig(memory_budget_mb=budget / 2**20, threshold=0.7), Reruns("strict"))
    assert snapshot(tmp_path) == before
    # ... and a budget that gives the same partitions redoes nothing: it shapes no decision
    markers = {p: p.stat().st_mtime_ns for p in work.rglob("_done/*.json")}
    run_dedup(tmp_path, docs, DedupConfig(memory_budget_mb=1.1 * budget / 2**20), Reruns("strict"))
    assert {p: p.stat().st_mtime_ns for p in work.rglob("_done/*.json")} == markers


def test_every_duplicate_of_names_a_kept_document(tmp_path, ray_local):
    """Planted chains: x is an exact copy of s (lower quality: s survives the exact stage), t a
    near copy of s (higher quality: s is then dropped as a near duplicate of t). x must name t,
    the document that is kept, not s; across files and partitions."""
    texts = independent([t for t in crawl_texts() if len(t.split()) >= 200])[:12]
    rows: dict[str, list[tuple[str, str, float]]] = {"f0": [], "f1": [], "f2": []}
    for i, text in enumerate(texts):
        words = text.split()
        words[len(words) // 2] = "changed"
        rows[f"f{i % 3}"].append((f"s{i:02d}", text, 0.5))
        rows[f"f{(i + 1) % 3}"].append((f"x{i:02d}", "  " + text.upper(), 0.1))
        rows[f"f{(i + 2) % 3}"].append((f"t{i:02d}", " ".join(words), 0.9))
        rows["f0"].append((f"k{i:02d}", texts[(i + 5) % len(texts)] + " unrelated tail " * 50, 0.3))  # filler
    docs = {n: write_docs(tmp_path / "in" / f"{n}.parquet", [r[0] for r in rs], [r[1] for r in rs],
                          quality_score=[r[2] for r in rs]) for n, rs in rows.items()}
    stats = run_dedup(tmp_path, docs, DedupConfig(partitions=3))
    kept = {d for n in docs for d in pq.read_table(tmp_path / "out" / f"{n}.parquet")["id"].to_pylist()}
    dropped = survivors(tmp_path / "out")
    assert all(survivor in kept for survivor in dropped.values()), dropped
    for i in range(len(texts)):
        assert dropped[f"s{i:02d}"] == dropped[f"x{i:02d}"] == f"t{i:02d}" and f"t{i:02d}" in kept
    assert stats["exact_duplicates_of_near_duplicates"] == len(texts)


def test_partitions_and_budget_never_change_decisions(tmp_path, ray_local):
    """One partition with the default budget; a budget so small that the per-file tasks write
    every batch through and the lsh stage needs 3 partitions; 4 partitions everywhere, the
    connected components included: the same survivors, and the same kept documents in order."""
    docs = small_corpus(tmp_path / "in")
    runs = {"default": DedupConfig(), "tiny budget": DedupConfig(memory_budget_mb=32 * 1024 / 2**20),
            "4 partitions": DedupConfig(partitions=4)}
    stats, kept, dropped = {}, {}, {}
    for name, cfg in runs.items():
        stats[name] = run_dedup(tmp_path / name, docs, cfg)
        dropped[name] = survivors(tmp_path / name / "out")
        kept[name] = [pq.read_table(tmp_path / name / "out" / f"{n}.parquet").to_pylist() for n in docs]
    assert [(s["partitions"], s["component_partitions"]) for s in stats.values()] == [(1, 1), (3, 1), (4, 4)]
    assert len(dropped["default"]) == stats["default"]["exact_duplicates"] + stats["default"]["near_duplicates"] >= 36
    for name in runs:
        assert dropped[name] == dropped["default"], name
        assert kept[name] == kept["default"], name


def test_bad_settings_stop_before_work(tmp_path):
    for bad, match in ((dict(hashfunc="md5"), "hashfunc"), (dict(bands=20), "go together"),
                       (dict(bands=20, rows=10), "num_perm"), (dict(threshold=1.0), "threshold")):
        with pytest.raises(ValueError, match=match):
            Deduplicator(DedupConfig(**bad), tmp_path)
    assert not any(tmp_path.iterdir())
    assert set(SHINGLE_HASHES) == set(shingling.SHINGLE_HASHES)  # the schema's choices are the signer's
    proc = run_module("dataprep.dedup_job", f"input_dir={tmp_path}", f"output_dir={tmp_path}/out",
                      "dedup.hashfunc=md5", check=False, timeout=120)
    assert proc.returncode != 0 and "dedup.hashfunc='md5'" in proc.stdout + proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_standalone_command_on_jsonl_and_parquet(tmp_path):
    texts = independent([t for t in crawl_texts() if len(t.split()) >= 200])[:40]
    rows = [{"id": f"a{i:02d}", "text": t, "url": f"https://example.org/{i}", "quality_score": 0.5}
            for i, t in enumerate(texts[:20])]
    rows.append({"id": "a90", "text": texts[3].upper() + "\n", "url": "u", "quality_score": 0.9})  # exact, better
    words = texts[7].split()
    words[len(words) // 2] = "changed"
    rows.append({"id": "a91", "text": " ".join(words), "url": "u", "quality_score": 0.1})  # near, worse
    folder = tmp_path / "in"
    folder.mkdir()
    with gzip.open(folder / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    b = [json.dumps({"id": f"b{i:02d}", "text": t}).encode() + b"\n" for i, t in enumerate(texts[20:30])]
    b[4:4] = [b'{"id": "b98", "text": "cut sh\n', b'{"id": "b99", "text": "caf\xe9"}\n']  # not JSON, not UTF-8
    (folder / "b.jsonl").write_bytes(b"".join(b))
    write_docs(folder / "c.parquet", ["c00", "c01"], [texts[25], texts[30]], url=["x", "y"])  # c00 = b05
    (folder / "notes.txt").write_text("not a document file")
    out = tmp_path / "out"
    run_module("dataprep.dedup_job", f"input_dir={folder}", f"output_dir={out}", "ray.num_cpus=2", timeout=300)

    kept_ids = (out / "kept_ids.txt").read_text().split()
    assert len(kept_ids) == 31 and {"a03", "a91", "c00"}.isdisjoint(kept_ids) and "a90" in kept_ids
    dropped = survivors(out)
    assert dropped == {"a03": "a90", "a91": "a07", "c00": "b05"}
    a = pq.read_table(out / "documents" / "a_jsonl_gz.parquet")
    assert set(a.column_names) == {"id", "text", "url", "quality_score"} and len(a) == 20
    stages = json.loads((out / "stats.json").read_text())["stages"]
    assert (stages["input"]["docs_in"], stages["input"]["dropped"]) == (22 + 10 + 2, {"bad_json": 2, "truncated": 0})
    stats = stages["dedup"]
    assert (stats["docs_in"], stats["docs_out"], stats["exact_duplicates"], stats["near_duplicates"],
            stats["clusters"], stats["largest_cluster"]) == (34, 31, 2, 1, 1, 2)
    assert (stats["exact_group_sizes"], stats["cluster_sizes"]) == ({"2": 2}, {"2": 1})


def test_jsonl_input_is_converted_a_batch_at_a_time(tmp_path):
    """dedup_job's JSON-lines input: 30,000 lines of 1 KB (their rows in Python ~ 50 MB) become
    Parquet holding one batch at a time; a field only late lines have, and one that is an integer
    on some lines and real on others, keep their values."""
    import tracemalloc

    from dataprep.dedup_job import jsonl_to_parquet_task

    n, words = 30_000, " ".join(crawl_texts()[0].split()[:160])[:1000]
    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(n):
            row = {"id": f"d{i:05d}", "text": f"{i} {words}"}
            if i in (7, n - 2):
                row["score"] = 1 if i == 7 else 0.5
            if i == n - 1:
                row["meta"] = {"url": "https://example.org/last"}
            f.write(json.dumps(row) + "\n")
    out = tmp_path / "big.parquet"
    tracemalloc.start()
    stats = jsonl_to_parquet_task(str(path), str(out))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    table = pq.read_table(out)
    assert stats["docs_in"] == table.num_rows == n
    assert table.column_names == ["id", "text", "score", "meta"]
    assert table.schema.field("score").type == pa.float64()
    scores = table.column("score").to_pylist()
    assert (scores[7], scores[n - 2], scores[0]) == (1.0, 0.5, None)
    assert table.column("meta").to_pylist()[-1] == {"url": "https://example.org/last"}
    assert table.column("text").to_pylist()[12345] == f"12345 {words}"
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB of Python objects for a 30 MB file"
