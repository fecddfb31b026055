"""Validation held out by document, per source, before the mixture repeats any: which documents,
the training documents that share text with them, and the issue's test on the sample corpus (no
50-token span of a validation window occurs in a training window)."""

import json
import math

import numpy as np
import pytest

from dataprep import holdout
from dataprep.config import ValidationConfig
from dataprep.shards import IndexedShard, ShardWriter
from pretrain.data import PackedSamples, Splits, TokenStream


def test_held_out_documents_are_the_first_by_a_hash_of_their_id():
    ids = [f"doc-{i}" for i in range(400)]
    lengths = np.full(400, 100)
    v = ValidationConfig(fraction=0.05, min_documents=3, max_tokens=10**9, seed=7)
    chosen = holdout.choose(holdout.id_hashes(ids, 7), lengths, v)
    hashes = holdout.id_hashes(ids, 7)
    assert len(chosen) == math.ceil(0.05 * 400) == 20
    assert chosen.tolist() == np.argsort(hashes)[:20].tolist()  # the 20 smallest hashes, in hash order
    # The ids decide, not where a document sits: reversed files hold out the same documents.
    again = holdout.choose(holdout.id_hashes(ids[::-1], 7), lengths, v)
    assert {ids[::-1][i] for i in again} == {ids[i] for i in chosen}
    # Another seed, another set; the minimum for a small source; never the last training document.
    assert set(holdout.choose(holdout.id_hashes(ids, 8), lengths, v)) != set(chosen)
    assert len(holdout.choose(holdout.id_hashes(ids[:10], 7), lengths[:10], v)) == 3
    assert len(holdout.choose(holdout.id_hashes(ids[:3], 7), lengths[:3], v)) == 2
    assert len(holdout.choose(holdout.id_hashes(ids[:1], 7), lengths[:1], v)) == 0
    # max_tokens cuts the ranked list: documents are taken while fewer tokens are held out.
    capped = holdout.choose(hashes, lengths, ValidationConfig(fraction=0.05, max_tokens=650, seed=7))
    assert capped.tolist() == chosen[:7].tolist()
    assert len(holdout.choose(hashes, lengths, ValidationConfig(fraction=0.0))) == 0


def test_bad_validation_settings_name_the_key():
    for bad, key in ((dict(fraction=1.0), "validation.fraction"), (dict(min_documents=-1), "validation.min_documents"),
                     (dict(max_tokens=0), "validation.max_tokens"), (dict(overlap_tokens=0), "validation.overlap_tokens")):
        with pytest.raises(ValueError, match=key):
            ValidationConfig(**bad)


@pytest.mark.parametrize("chunk", [holdout.CHUNK_TOKENS, 64])
def test_a_training_document_sharing_a_span_with_a_held_out_one_is_found(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(holdout, "CHUNK_TOKENS", chunk)
    rng = np.random.default_rng(0)
    noise = lambda n: rng.integers(100, 4000, n)  # noqa: E731
    held = noise(120)
    docs = {
        "held": held,  # the held-out document itself (skipped)
        "shares_50": np.concatenate([noise(30), held[10:60], noise(20)]),
        "shares_49": np.concatenate([noise(30), held[0:49], noise(20)]),
        "same_text": held.copy(),  # the held-out text under another id
        "ends_in_25": np.concatenate([noise(40), held[0:25]]),  # with the next one: 50 tokens across
        "starts_with_25": np.concatenate([held[25:50], noise(40)]),  # a boundary, not one document's
        "short": held[:30],
        "unrelated": noise(200),
    }
    with ShardWriter(tmp_path, "file", np.uint16, shard_tokens=1 << 40) as w:
        for tokens in docs.values():
            w.add_document(np.append(tokens, 0))
    spans = np.unique(holdout.span_hashes(np.append(held, 0), 50))
    rows = holdout.overlapping_rows(IndexedShard(tmp_path / "file_00000"), spans, 50, skip=[0])
    assert [list(docs)[r] for r in rows] == ["shares_50", "same_text"]


def _span_hashes(samples: PackedSamples, n: int = 50) -> set[int]:
    """Every run of n tokens inside a window the trainer reads from `samples` (Python's hash of the
    tokens: not the code under test)."""
    rows = samples.read_windows(samples.split_windows(np.arange(len(samples)))).astype(np.uint16)
    return {hash(r.tobytes()) for row in rows for r in np.lib.stride_tricks.sliding_window_view(row, n)}


def test_no_validation_text_reaches_training_on_the_sample_corpus(corpus):
    """The issue's test. The corpus job holds out documents of each source; its held-out crawl
    pages include one of the sample's two near-duplicate pages (467 shared 50-token spans: MinHash
    at 0.8 keeps both), whose twin is then left out of training. The windows the trainer reads
    share no 50-token span with any source's validation windows. The older hold-out (windows of
    the training stream) fails the same test: the mixture repeats webtext's documents."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    stats = json.loads((corpus / "stats.json").read_text())["stages"]["holdout"]
    assert stats["dropped"]["overlaps_held_out"] >= 1
    stream = TokenStream(corpus / "manifest.json")
    splits = Splits.of(stream, 128, seed=3, val_fraction=0.05)
    assert set(splits.validation) == set(manifest["sources"]) == set(manifest["validation"]["sources"])
    training = _span_hashes(splits.train)
    for name, val in splits.validation.items():
        held = _span_hashes(val)
        assert held and not held & training, name
    window_holdout = PackedSamples(stream, 128, 3, "val", 0.05), PackedSamples(stream, 128, 3, "train", 0.05)
    assert _span_hashes(window_holdout[0]) & _span_hashes(window_holdout[1])
