"""The training sample order is a pure function of (manifest, seed, index)."""

import json
from pathlib import Path

import numpy as np
import pytest

from dataprep.shards import ShardWriter
from pretrain.data import BatchLayout, PackedSamples, TokenStream, WindowOrder


@pytest.fixture()
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 1000, size=rng.integers(5, 200)) for _ in range(300)]
    with ShardWriter(tmp_path, "shard", np.uint16, shard_tokens=5000) as w:
        for d in docs:
            w.add_document(np.append(d, 999))
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"tokenizer": {"vocab_size": 1000}, "shards": w.shards}))
    flat = np.concatenate([np.append(d, 999) for d in docs])
    return path, flat, len(w.shards)


def test_stream_reads_across_shard_boundaries(manifest):
    path, flat, n_shards = manifest
    stream = TokenStream(path)
    assert n_shards > 2 and stream.num_tokens == len(flat)
    for start in (0, 4990, 5003, len(flat) - 37):
        assert np.array_equal(stream.read(start, 37), flat[start : start + 37])


def test_samples_are_shifted_windows_and_deterministic(manifest):
    path, flat, _ = manifest
    a = PackedSamples(TokenStream(path), 64, seed=7)
    b = PackedSamples(TokenStream(path), 64, seed=7)
    for i in (0, 5, len(a) - 1, len(a) + 3):  # the last one is in the second epoch
        x, y = a[i]
        w = a.window(i)
        assert np.array_equal(x, flat[w * 64 : w * 64 + 64])
        assert np.array_equal(y, flat[w * 64 + 1 : w * 64 + 65])
        assert np.array_equal(x, b[i][0])
    assert [a.window(i) for i in range(20)] != [PackedSamples(TokenStream(path), 64, seed=8).window(i) for i in range(20)]


def test_epoch_covers_every_train_window_once_and_val_is_disjoint(manifest):
    path, _, _ = manifest
    train = PackedSamples(TokenStream(path), 64, seed=1, split="train", val_fraction=0.1)
    val = PackedSamples(TokenStream(path), 64, seed=1, split="val", val_fraction=0.1)
    n_windows = (TokenStream(path).num_tokens - 1) // 64
    epoch = [train.window(i) for i in range(len(train))]
    assert len(set(epoch)) == len(epoch) == len(train)
    held_out = set(val.windows(np.arange(len(val))).tolist())
    assert not set(epoch) & held_out
    assert set(epoch) | held_out == set(range(n_windows))
    assert len(val) == round(n_windows * 0.1)
    # The next epoch is another order of the same windows.
    second = train.windows(np.arange(len(train), 2 * len(train))).tolist()
    assert sorted(second) == sorted(epoch) and second != epoch


def test_ranks_take_disjoint_consecutive_slices():
    layout = BatchLayout(micro_batch_size=4, grad_accum_steps=2, world_size=3)
    seen = []
    for step in range(3):
        for micro in range(2):
            for rank in range(3):
                seen.extend(layout.indices(step, micro, rank))
    assert seen and sorted(seen) == list(range(3 * layout.global_batch))
    assert len(set(seen)) == len(seen)
    # Resuming at step 2 reads exactly what an uninterrupted run reads at step 2.
    assert list(layout.indices(2, 1, 2)) == list(range(2 * 24 + 1 * 12 + 2 * 4, 2 * 24 + 1 * 12 + 3 * 4))


def test_stream_needs_no_index_files_and_maps_few_shards_at_once(manifest):
    """At scale a manifest lists tens of thousands of shards whose .idx files hold every document
    boundary: the stream reads neither, and keeps only `open_shards` shards mapped."""
    path, flat, n_shards = manifest
    for idx in path.parent.glob("*.idx"):
        idx.unlink()
    stream = TokenStream(path, open_shards=2)
    assert n_shards > 4
    for start in range(0, len(flat) - 300, 997):  # across every shard, back and forth
        assert np.array_equal(stream.read(start, 300), flat[start:start + 300])
        assert len(stream._mapped) <= 2
    assert np.array_equal(stream.read(0, 10), flat[:10])


def test_manifest_that_disagrees_with_shards_is_refused(manifest):
    path, _, _ = manifest
    m = json.loads(path.read_text())
    m["shards"][0]["tokens"] += 1
    path.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="manifest says"):
        TokenStream(path)


def test_data_fingerprint_follows_the_shards_not_the_path(manifest):
    from pretrain.data import data_fingerprint

    path, _, _ = manifest
    m = json.loads(path.read_text())
    moved = json.loads(json.dumps(m))
    assert data_fingerprint(moved) == data_fingerprint(m)
    moved["shards"][0]["bin_sha256"] = "0" * 64
    assert data_fingerprint(moved) != data_fingerprint(m)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 65, 1000, 4099])
def test_window_order_is_a_bijection(n):
    order = WindowOrder(n, (5, 1))
    image = order(np.arange(n))
    assert sorted(image.tolist()) == list(range(n))
    assert np.array_equal(image, WindowOrder(n, (5, 1))(np.arange(n)))  # a pure function of the key
    if n > 10:
        assert not np.array_equal(image, np.arange(n))  # it shuffles
        assert not np.array_equal(image, WindowOrder(n, (5, 2))(np.arange(n)))
    assert order(n - 1) == image[n - 1]  # one index alone: the same answer
    with pytest.raises(IndexError):
        order(n)


def test_window_order_costs_nothing_up_front_at_any_size():
    """10^12 windows: building the order and reading any index is instant and holds no table."""
    import time, tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    order = WindowOrder(10**12, (1, 0))
    picks = order(np.array([0, 1, 10**12 - 1, 123456789012]))
    assert time.perf_counter() - t0 < 0.5
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()
    assert len(set(picks.tolist())) == 4 and all(0 <= p < 10**12 for p in picks.tolist())


def test_prefetcher_yields_what_direct_reads_give_in_order(manifest):
    import torch

    from pretrain.loader import Prefetcher

    path, _, _ = manifest
    samples = PackedSamples(TokenStream(path), 32, seed=2)
    layout = BatchLayout(micro_batch_size=3, grad_accum_steps=2, world_size=2)
    with Prefetcher(samples, layout, rank=1, start_step=5, end_step=9, device=torch.device("cpu"), depth=2) as p:
        got = list(p)
    expected = [(s, m) for s in range(5, 9) for m in range(2)]
    assert [(b.step, b.micro) for b in got] == expected
    for b, (s, m) in zip(got, expected):
        assert list(b.indices) == list(layout.indices(s, m, 1))
        x, y = samples.batch(b.indices)
        assert torch.equal(b.inputs, x) and torch.equal(b.targets, y)


def test_prefetcher_hands_a_read_error_to_the_training_thread(manifest):
    import torch

    from pretrain.loader import Prefetcher

    path, _, _ = manifest
    samples = PackedSamples(TokenStream(path), 32, seed=2)
    Path(samples.stream.paths[0]).unlink()  # a shard gone after the stream was opened
    layout = BatchLayout(micro_batch_size=2, grad_accum_steps=1, world_size=1)
    with pytest.raises(FileNotFoundError):
        with Prefetcher(samples, layout, rank=0, start_step=0, end_step=50, device=torch.device("cpu")) as p:
            list(p)


def _write_set(folder, prefix, docs, shard_tokens=5000):
    with ShardWriter(folder, prefix, np.uint16, shard_tokens=shard_tokens) as w:
        for d in docs:
            w.add_document(np.append(d, 999))
    return w.shards


def test_validation_reads_each_sources_held_out_shards_and_training_every_window(tmp_path):
    """A manifest with validation shards: training windows are the whole training stream (nothing
    held out of it), each source's validation windows come from its own shards, and val_loss
    weights the sources by their target weights; a source too small for a window is named."""
    from pretrain.data import Splits

    rng = np.random.default_rng(1)
    train_docs = [rng.integers(0, 500, size=rng.integers(5, 200)) for _ in range(200)]
    held = {"web": [rng.integers(500, 700, size=150) for _ in range(4)], "books": [rng.integers(700, 900, size=90)],
            "tiny": [rng.integers(0, 9, size=10)]}
    manifest = {"tokenizer": {"vocab_size": 1000}, "shards": _write_set(tmp_path, "shard", train_docs),
                "sources": {"web": {"target_weight": 0.6}, "books": {"target_weight": 0.2}, "tiny": {"target_weight": 0.2}},
                "validation": {"sources": {name: {"shards": _write_set(tmp_path, f"val_{name}", docs)}
                                           for name, docs in held.items()}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    stream = TokenStream(tmp_path / "manifest.json")
    splits = Splits.of(stream, 64, seed=4, val_fraction=0.05)
    n_windows = (stream.num_tokens - 1) // 64
    assert len(splits.train) == n_windows  # val_fraction is not used: no training window is held out
    assert sorted(splits.train.windows(np.arange(n_windows)).tolist()) == list(range(n_windows))
    assert set(splits.validation) == {"web", "books"} and "tiny (11 tokens)" in splits.how
    assert splits.weights == pytest.approx({"web": 0.75, "books": 0.25})
    for name, val in splits.validation.items():
        flat = np.concatenate([np.append(d, 999) for d in held[name]])
        assert len(val) == (len(flat) - 1) // 64
        rows = val.tokens(np.arange(len(val)))
        assert sorted(tuple(r) for r in rows) == sorted(tuple(flat[w * 64:w * 64 + 65]) for w in range(len(val)))
    with pytest.raises(KeyError, match="no validation shards of source 'news'"):
        TokenStream(tmp_path / "manifest.json", "news")


def test_a_manifest_without_validation_shards_keeps_the_window_hold_out_and_says_so(manifest):
    from pretrain.data import Splits

    path, _, _ = manifest
    stream = TokenStream(path)
    splits = Splits.of(stream, 64, seed=1, val_fraction=0.1)
    assert set(splits.validation) == {""} and splits.weights == {"": 1.0}
    assert "data.val_fraction" in splits.how and "optimistic" in splits.how
    expected = PackedSamples(stream, 64, seed=1, split="val", val_fraction=0.1)
    assert splits.validation[""].windows(np.arange(len(expected))).tolist() == expected.windows(np.arange(len(expected))).tolist()
    assert len(splits.train) + len(expected) == (stream.num_tokens - 1) // 64
    assert Splits.of(stream, 64, seed=1, val_fraction=0.0).validation == {}
