"""The tokenizer: a byte-level BPE trained here or GPT-2's tokenizer.json; documents end in the
end-of-document id; the Ray task writes tokens a reader gets back exactly."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from dataprep import documents, tokenize
from dataprep.config import register
from dataprep.layout import CorpusLayout
from dataprep.shards import IndexedShard
from dataprep.stages import StageInputs, dedup, sources
from dataprep.stages.tokenize import tokenize_task, training_texts

register()
EOD = "<|endoftext|>"
MIXED = ["Ünïcödé, 日本語のテキスト and emoji 🎉 survive a byte-level BPE.", "plain ascii\n\twith  spaces  "]


@pytest.fixture(scope="module")
def shakespeare(shared_data):
    return (shared_data / "reference" / "tinyshakespeare.txt").read_text()[:300_000].split("\n\n")


def test_trained_bpe_has_its_size_and_special_tokens(shakespeare):
    tok = tokenize.train_bpe(shakespeare, 600, 2, EOD, ["<|pad|>", "<|sep|>"])
    assert tok.get_vocab_size() == 600
    assert [tok.token_to_id(t) for t in (EOD, "<|pad|>", "<|sep|>")] == [0, 1, 2]
    assert tok.encode("a <|sep|> b").ids.count(2) == 1  # a special token is one id, never split
    for text in MIXED + shakespeare[:20]:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text
    again = tokenize.train_bpe(shakespeare, 600, 2, EOD, ["<|pad|>", "<|sep|>"])
    assert again.to_str() == tok.to_str()  # the same sample makes the same tokenizer (reruns)
    with pytest.raises(ValueError, match="duplicates"):
        tokenize.train_bpe(shakespeare[:5], 300, 2, EOD, ["<|pad|>", "<|pad|>"])


def test_documents_end_in_eod_and_only_there(shakespeare):
    tok = tokenize.train_bpe(shakespeare, 500, 2, EOD)
    eod = tok.token_to_id(EOD)
    texts = MIXED + [f"a page that quotes {EOD} in its text"]
    for text, ids in zip(texts, tokenize.encode_documents(tok, texts, eod)):
        assert ids[-1] == eod and eod not in ids[:-1]
        assert tok.decode(ids[:-1]) == text


def test_gpt2_tokenizer_json_loads(shared_data, tmp_path):
    path = shared_data / "tokenizer" / "gpt2" / "tokenizer.json"
    tok = tokenize.load_tokenizer(path, EOD)
    assert tok.get_vocab_size() == 50257 and tok.token_to_id(EOD) == 50256
    assert tokenize.encode_documents(tok, ["Hello world"], 50256) == [[15496, 995, 50256]]
    with pytest.raises(FileNotFoundError, match="tokenizer.path"):
        tokenize.load_tokenizer(tmp_path / "none.json", EOD)
    with pytest.raises(ValueError, match="tokenizer.eod_token"):
        tokenize.load_tokenizer(path, "<|eod|>")


def test_tokenize_task_writes_readable_tokens(shakespeare, tmp_path):
    tok = tokenize.train_bpe(shakespeare, 500, 2, EOD)
    tok.save(str(tmp_path / "tokenizer.json"))
    docs = [documents.new_document(f"d{i}", t, f"https://example.org/{i}", "file.txt")
            for i, t in enumerate(MIXED + shakespeare[:2000])]
    documents.write_documents(tmp_path / "docs.parquet", docs)
    stats = tokenize_task(str(tmp_path / "docs.parquet"), str(tmp_path / "tokenizer.json"), EOD,
                          str(tmp_path / "out"), "task")
    shard = IndexedShard(tmp_path / "out" / "task_00000")
    meta = pq.read_table(tmp_path / "out" / "task.parquet").to_pylist()
    assert shard.dtype == np.uint16 and len(shard) == len(meta) == len(docs) == stats["docs_out"]
    assert stats["tokens"] == shard.num_tokens == sum(m["tokens"] for m in meta)
    for i in (0, 1, 2, len(docs) - 1):  # across the encode batches, in order
        assert meta[i]["id"] == docs[i]["id"] and meta[i]["url"] == docs[i]["url"]
        assert shard[i][-1] == 0 and tok.decode(shard[i][:-1].tolist()) == docs[i]["text"]


def test_training_sample_follows_the_mixture_weights(corpus):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = OmegaConf.to_object(compose(config_name="dataprep", overrides=[
            f"output_dir={corpus}", "tokenizer.sample_bytes=300000"]))
    layout, inputs = CorpusLayout(cfg.output_dir), StageInputs.of(cfg)
    crawl = {n: layout.documents(dedup.NAME, n) for n in inputs.archives}
    docs = sources.documents(layout, inputs, crawl)
    texts = {name: {d["text"] for f in files.values() for d in documents.read_documents(f, ["text"])}
             for name, files in docs.items()}
    sample = {"documents": 0, "bytes": 0}
    drawn = list(training_texts(cfg.tokenizer, inputs.sources, docs, sample))
    assert sample["documents"] == len(drawn) and sample["bytes"] == sum(len(t.encode()) for t in drawn)
    wsum = sum(s.weight for s in inputs.sources.values())
    for name, src in inputs.sources.items():
        mine = [t for t in drawn if t in texts[name]]
        got, budget = sum(len(t.encode()) for t in mine), 300_000 * src.weight / wsum
        largest = max(len(t.encode()) for t in texts[name])
        assert 0.5 * budget <= got <= budget + largest, (name, got, budget)
    # seeded: the same sample
    assert drawn == list(training_texts(cfg.tokenizer, inputs.sources, docs, {"documents": 0, "bytes": 0}))
    marker = json.loads((corpus / "tokenize" / "_done" / "tokenizer.json").read_text())
    assert "sampled from the mixture's sources" in marker["how"]
