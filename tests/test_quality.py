"""The GPT-3 style quality classifier: training on real reference vs crawl text, a safe model
file, and per-document reproducible Pareto selection."""

import json

import numpy as np
import pytest

from conftest import SHARED_DATA
from dataprep import quality


@pytest.fixture(scope="module")
def model():
    positives = list(quality.reference_documents(
        [str(SHARED_DATA / "reference" / "gutenberg_*.txt"), str(SHARED_DATA / "reference" / "wikitext-2_valid.txt")],
        3000))[::3]
    negatives = list(quality.jsonl_documents([str(SHARED_DATA / "text" / "dolma_CC-MAIN-*.jsonl.gz")]))
    return quality.train(positives, negatives, quality.FeatureSettings(hash_bits=16), seed=3)


def test_reference_documents_lose_gutenberg_header_and_wikitext_markup():
    docs = list(quality.reference_documents([str(SHARED_DATA / "reference" / "gutenberg_1342_pride_and_prejudice.txt")], 3000))
    assert len(docs) > 200 and all(len(d) < 4000 for d in docs)
    text = "\n".join(docs)
    assert "It is a truth universally acknowledged" in docs[0] or "It is a truth universally acknowledged" in docs[1]
    assert "Project Gutenberg" not in text[:2000] and "Project Gutenberg" not in text[-5000:]
    wiki = list(quality.reference_documents([str(SHARED_DATA / "reference" / "wikitext-2_valid.txt")], 3000))
    assert not any(" @-@ " in d for d in wiki)


def test_heldout_evaluation_is_reported(model):
    info = model.info
    assert info["heldout"] > 100 and info["train"] > 4 * info["heldout"] * 0.9
    for key in ("precision", "recall", "f1", "roc_auc"):
        assert 0.85 < info[key] <= 1.0, (key, info)
    # scores rank clean prose above boilerplate crawl text
    good = "The committee met on Tuesday and agreed that the new bridge should be finished before the winter."
    bad = "Home | Login | Register | Cart (0) | Checkout | Free shipping on orders over $50 | Contact us"
    s = model.score([good, bad])
    assert s.dtype == np.float32 and s[0] > s[1]


def test_model_file_is_safetensors_and_round_trips(model, tmp_path):
    path = tmp_path / "model.safetensors"
    model.save(path)
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert set(header) == {"weights", "__metadata__"}  # tensors + strings: nothing to execute
    assert json.loads(header["__metadata__"]["ccpretrain"])["features"]["hash_bits"] == 16
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
