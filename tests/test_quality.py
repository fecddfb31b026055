"""The GPT-3 style quality classifier: training on real reference vs crawl text, a safe model
file, and per-document reproducible Pareto selection."""

import json

import numpy as np
import pytest

from conftest import SHARED_DATA, damaged_jsonl
from dataprep import quality
from dataprep.readers import read_jsonl


def examples():
    """Positives: book and Wikipedia chunks; negatives: a CC-MAIN extract's documents, keyed by
    their ids (as crawl documents are)."""
    positives = list(quality.reference_documents(
        [str(SHARED_DATA / "reference" / "gutenberg_*.txt"), str(SHARED_DATA / "reference" / "wikitext-2_valid.txt")],
        3000))[::3]
    path = SHARED_DATA / "text" / "dolma_CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"
    negatives = [(row["id"], row["text"]) for _, row in read_jsonl(path)]
    return positives, negatives


FEATURES = quality.FeatureSettings(hash_bits=16)


@pytest.fixture(scope="module")
def model():
    return quality.train(*examples(), FEATURES, seed=3)


def test_reference_documents_lose_gutenberg_header_and_wikitext_markup():
    docs = [t for _, t in quality.reference_documents([str(SHARED_DATA / "reference" / "gutenberg_1342_pride_and_prejudice.txt")], 3000)]
    assert len(docs) > 200 and all(len(d) < 4000 for d in docs)
    text = "\n".join(docs)
    assert "It is a truth universally acknowledged" in docs[0] or "It is a truth universally acknowledged" in docs[1]
    assert "Project Gutenberg" not in text[:2000] and "Project Gutenberg" not in text[-5000:]
    wiki = [t for _, t in quality.reference_documents([str(SHARED_DATA / "reference" / "wikitext-2_valid.txt")], 3000)]
    assert not any(" @-@ " in d for d in wiki)


def test_heldout_evaluation_is_reported(model):
    info = model.info
    assert model.folds == info["folds"] == 5
    # every example is held out once, by the fold model that did not train on it
    assert info["trained_positives"] == info["positives"] > 300 and info["trained_negatives"] == info["negatives"] > 600
    for key in ("precision", "recall", "f1", "roc_auc"):
        assert 0.85 < info[key] <= 1.0, (key, info)
    # scores rank clean prose above boilerplate crawl text
    good = "The committee met on Tuesday and agreed that the new bridge should be finished before the winter."
    bad = "Home | Login | Register | Cart (0) | Checkout | Free shipping on orders over $50 | Contact us"
    s = model.score([good, bad])
    assert s.dtype == np.float32 and s[0] > s[1]


def test_a_documents_score_depends_only_on_the_training_data_outside_its_fold(model):
    """The property: a crawl document of fold j is scored by fold model j, trained on the examples
    outside fold j, as a set. So altering or removing the other documents of its fold, and reading
    the training data in another order, leave its score bit for bit as it was; documents of the
    other folds, whose models did train on what changed, score differently."""
    positives, negatives = examples()
    fold = lambda key: quality.fold_of(key, 5, 3)  # noqa: E731
    scored = [(k, t) for k, t in negatives if fold(k) == 0][::2]
    keep = {k for k, _ in scored}
    others = [(k, t) for k, t in negatives if fold(k) != 0]
    before = model.score_held_out([k for k, _ in scored], [t for _, t in scored])

    # Fold 0 changed around the scored documents: half its other documents gone, the rest rewritten
    # (a reference chunk's text in place of theirs); every example fed in reverse order.
    in_fold = [(k, t) for k, t in negatives if fold(k) == 0 and k not in keep]
    rewritten = [(k, positives[i][1]) for i, (k, _) in enumerate(in_fold[::2])]
    pos_changed = [(k, t) for i, (k, t) in enumerate(positives) if fold(k) != 0 or i % 2]
    changed = quality.train(pos_changed[::-1], (scored + rewritten + others)[::-1], FEATURES, seed=3)
    after = changed.score_held_out([k for k, _ in scored], [t for _, t in scored])
    assert np.array_equal(before, after)
    assert np.array_equal(model.weights[0], changed.weights[0])
    elsewhere = others[:50]
    assert not np.array_equal(model.score_held_out(*zip(*elsewhere)), changed.score_held_out(*zip(*elsewhere)))
    # What cross-fitting avoids: the fold models that trained on these crawl negatives score them
    # lower than the one that did not.
    in_sample = quality.QualityModel(model.weights[1:], model.bias[1:], FEATURES).score([t for _, t in scored])
    assert np.mean(in_sample) < np.mean(before)


def test_the_training_set_is_a_bounded_sample_that_no_order_changes():
    positives, negatives = examples()
    small = quality.train(positives, negatives, FEATURES, max_train_docs=100, seed=3)
    assert small.info["positives"] == len(positives) and small.info["negatives"] == len(negatives)
    assert small.info["trained_positives"] <= 100 and small.info["trained_negatives"] <= 100
    assert small.info["trained_negatives"] >= 90  # 20 per fold, as the folds hold far more
    reordered = quality.train(positives[::-1], negatives[::-1], FEATURES, max_train_docs=100, seed=3)
    assert np.array_equal(small.weights, reordered.weights) and small.info == reordered.info
    sample = quality.FoldSample(5, 100, 3, 20_000)
    for key, text in negatives:
        sample.offer(key, text)
    kept = sample.examples()
    assert {k for k, _, _ in kept} < {k for k, _ in negatives} and all(f == quality.fold_of(k, 5, 3) for k, _, f in kept)


def test_bad_lines_in_negative_files_are_counted_not_fatal(tmp_path, shared_data):
    path, rows = damaged_jsonl(shared_data, tmp_path)
    dropped = {}
    got = list(quality.jsonl_documents([str(path)], dropped))
    assert [t for _, t in got] == [r["text"] for r in rows] and dropped == {"bad_json": 3}


def test_model_file_is_safetensors_and_round_trips(model, tmp_path):
    path = tmp_path / "model.safetensors"
    model.save(path)
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert set(header) == {"weights", "__metadata__"}  # tensors + strings: nothing to execute
    assert json.loads(header["__metadata__"]["ccpretrain"])["features"]["hash_bits"] == 16
    assert model.weights.shape == (5, 2**16)  # one weight vector per fold
    model.save(tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == raw  # a rerun writes the same bytes
    loaded = quality.load(path)
    texts = ["A short English sentence about rivers and hills.", "buy now cheap deals click here"]
    assert np.array_equal(loaded.score(texts), model.score(texts))
    assert loaded.info == model.info
    from safetensors.numpy import save_file
    save_file({"weights": model.weights}, str(tmp_path / "other.safetensors"), metadata={"ccpretrain": '{"format": "x"}'})
    with pytest.raises(ValueError, match="not a quality classifier"):
        quality.load(tmp_path / "other.safetensors")


def test_pareto_keep_is_seeded_per_document_and_follows_the_law():
    ids = [f"urn:uuid:{i}" for i in range(4000)]
    for score in (0.2, 0.8, 0.95):
        kept = [quality.pareto_keep(i, score, alpha=9) for i in ids]
        # P(pareto(a) > 1 - s) = (2 - s) ** -a
        assert np.mean(kept) == pytest.approx((2 - score) ** -9, abs=0.03)
        assert kept == [quality.pareto_keep(i, score, alpha=9) for i in reversed(ids)][::-1]  # order-free
    assert quality.pareto_keep("a", 1.0) is True
    assert [quality.pareto_keep(i, 0.5, seed=1) for i in ids] != [quality.pareto_keep(i, 0.5, seed=2) for i in ids]
    assert quality.keep("a", 0.7, "threshold", 0.5, 9, 1) and not quality.keep("a", 0.3, "threshold", 0.5, 9, 1)
    assert quality.histogram(np.array([0.0, 0.05, 0.5, 0.99, 1.0])) == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]


def test_a_wrong_quality_config_stops_before_any_work(model, tmp_path):
    from dataprep.config import QualityConfig
    with pytest.raises(ValueError, match="quality.selection='best'"):
        QualityConfig(selection="best")
    (tmp_path / "x.safetensors").write_bytes(b"not a model")
    with pytest.raises(Exception):
        QualityConfig(model_path=str(tmp_path / "x.safetensors"))
    model.save(tmp_path / "m.safetensors")
    QualityConfig(model_path=str(tmp_path / "m.safetensors"), selection="pareto")
    QualityConfig(enabled=False, selection="anything")
