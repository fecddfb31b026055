"""Zero-shot evaluation (pretrain/evaluate.py): the LAMBADA and bits-per-byte protocols on tiny
models, sharding over ranks, eval.jsonl; the same figures from plain `transformers` code."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import SHARED_DATA
from pretrain import evaluate as ev
from pretrain.config import EvalConfig
from pretrain.model import GPT, ModelConfig

LAMBADA = SHARED_DATA / "eval" / "lambada_test.jsonl"
WIKITEXT = SHARED_DATA / "reference" / "wikitext-2_test.txt"
EOD = "<|endoftext|>"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run faster on one thread than on two (much faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    """A small byte-level BPE (like the corpus job's), trained on a slice of the eval data."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = ev.read_lambada(LAMBADA)[:400] + [WIKITEXT.read_text(encoding="utf-8")[:200_000]]
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=512, special_tokens=[EOD], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    assert tok.token_to_id(EOD) == 0
    return tok


@pytest.fixture(scope="module")
def small_wiki(tmp_path_factory):
    """WikiText-2's first 12 test articles cut to 400 characters each (title first), to keep
    the scoring quick."""
    articles = ev.wikitext_articles(WIKITEXT.read_text(encoding="utf-8"))[:12]
    path = tmp_path_factory.mktemp("wiki") / "wiki.txt"
    path.write_text("".join(a[:400].rstrip() + " \n" for a in articles), encoding="utf-8")
    return path


@pytest.fixture
def settings(small_wiki):
    return lambda **kw: EvalConfig(**{"lambada_path": str(LAMBADA), "wikitext_path": str(small_wiki), **kw})


def tiny_model(seq_len=64, seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(n_layer=2, n_head=2, d_model=32, seq_len=seq_len, vocab_size=512)).eval()


def lambada_reference(model, tokenizer, passages, seq_len):
    """Passage by passage, unbatched, with true greedy decoding: (accuracy, perplexity)."""
    correct, nll = 0, 0.0
    for text in passages:
        context, word = text.rsplit(" ", 1)
        ctx = tokenizer.encode(context, add_special_tokens=False).ids
        tgt = tokenizer.encode(" " + word, add_special_tokens=False).ids
        ctx = ctx[-(seq_len + 1 - len(tgt)):]
        seq = torch.tensor([ctx + tgt[:-1]])
        with torch.no_grad():
            logp = F.log_softmax(model(seq)[0].float(), dim=-1)
        nll -= sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(tgt))
        generated = list(ctx)
        for _ in tgt:  # greedy generation, feeding back its own tokens
            with torch.no_grad():
                generated.append(int(model(torch.tensor([generated[-seq_len:]]))[0, -1].argmax()))
        correct += generated[len(ctx):] == tgt
    return correct / len(passages), math.exp(nll / len(passages))


class BigramModel:
    """A stand-in model whose prediction for the next token depends on the last token only: it
    predicts the token that follows in a table built from some LAMBADA targets, so that some
    passages are right and others are wrong by one token."""

    def __init__(self, tokenizer, passages, vocab=512, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, generator=g)
        for text in passages[::2]:
            ctx = tokenizer.encode(text.rsplit(" ", 1)[0], add_special_tokens=False).ids
            tgt = tokenizer.encode(" " + text.rsplit(" ", 1)[1], add_special_tokens=False).ids
            for a, b in zip((ctx + tgt)[-len(tgt) - 1:], tgt):
                self.table[a] = torch.randn(vocab, generator=g)
                self.table[a, b] = 20.0
        self.calls = 0

    def __call__(self, tokens):
        self.calls += 1
        return self.table[tokens]


def test_lambada_split_is_gpt2s():
    context, target = ev.lambada_split('He said, "Give it to Harlin."\n\nShe looked at Harlin')
    assert context == 'He said, "Give it to Harlin."\n\nShe looked at'
    assert target == " Harlin"


def test_lambada_accuracy_needs_every_target_token(tokenizer, settings):
    passages = ev.read_lambada(LAMBADA)[:40]
    model = BigramModel(tokenizer, passages)
    want_acc, want_ppl = lambada_reference(model, tokenizer, passages, seq_len=64)
    assert 0 < want_acc < 1  # some passages right, some wrong: the test can tell them apart
    s = settings(tasks=["lambada"], limit=40, batch_size=7)
    rows = ev.Evaluator(s, tokenizer, seq_len=64, eod_id=0).run(model, step=5, device="cpu")
    assert [(r["task"], r["metric"], r["n"], r["step"]) for r in rows] == [
        ("lambada", "accuracy", 40, 5), ("lambada", "perplexity", 40, 5)]
    assert rows[0]["value"] == pytest.approx(want_acc)
    assert rows[1]["value"] == pytest.approx(want_ppl, rel=1e-5)


def test_lambada_batched_and_truncated_equals_one_by_one(tokenizer, settings):
    """Right padding in batches changes nothing; a context longer than seq_len is cut from the
    left, keeping the whole target (16 tokens here: most passages are longer)."""
    passages = ev.read_lambada(LAMBADA)[:12]
    model = tiny_model(seq_len=16)
    _, want_ppl = lambada_reference(model, tokenizer, passages, seq_len=16)
    for batch_size in (1, 5):
        evaluator = ev.Evaluator(settings(tasks=["lambada"], limit=12, batch_size=batch_size),
                                 tokenizer, seq_len=16, eod_id=0)
        assert max(b.tokens.shape[1] for b in evaluator.batches["lambada"]) == 16
        rows = evaluator.run(model, step=0)
        assert rows[1]["value"] == pytest.approx(want_ppl, rel=1e-5)
    ids, first, targets = ev.lambada_row(list(range(100, 140)), [7, 8, 9], seq_len=16)
    assert ids == list(range(126, 140)) + [7, 8] and first == 13 and targets == [7, 8, 9]


def test_stride_windows_score_every_token_once():
    doc = list(range(1, 101))
    for seq_len, stride in [(16, 8), (16, 16), (16, 1), (7, 3), (200, 100)]:
        windows = ev.stride_windows(doc, seq_len, stride)
        scored = [t for _, _, targets in windows for t in targets]
        assert scored == doc[1:]
        for ids, first, targets in windows:
            assert len(ids) <= seq_len
            # The targets are the tokens after ids[first:], and each sees the whole window before it.
            start = doc.index(ids[0])
            assert targets == doc[start + first + 1:start + first + 1 + len(targets)]
            if start > 0:
                assert first >= seq_len - stride
    with pytest.raises(ValueError, match="wikitext_stride"):
        ev.stride_windows(doc, 16, 17)


def test_wikitext_articles_cover_the_file():
    text = WIKITEXT.read_text(encoding="utf-8")
    articles = ev.wikitext_articles(text)
    assert "".join(articles) == text
    assert len(articles) == 62  # WikiText-2's test split
    assert all(a.lstrip(" \n").startswith("= ") and not a.lstrip(" \n").startswith("= =") for a in articles)


def test_bits_per_byte_is_nll_over_bytes(tmp_path, tokenizer, settings):
    """Short articles that fit one window: bits per byte from one plain forward pass each."""
    text = " = Alpha = \n \n The cat sat on the mat . \n \n = Beta = \n \n A dog ran far away , then home . \n"
    path = tmp_path / "wiki.txt"
    path.write_text(text, encoding="utf-8")
    model = tiny_model(seq_len=64)
    nll = 0.0
    for article in ev.wikitext_articles(text):
        ids = [0] + tokenizer.encode(article, add_special_tokens=False).ids
        with torch.no_grad():
            logits = model(torch.tensor([ids[:-1]]))[0]
        nll += float(F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))
    s = settings(tasks=["wikitext2"], wikitext_path=str(path), batch_size=1)
    [row] = ev.Evaluator(s, tokenizer, seq_len=64, eod_id=0).run(model, step=1)
    assert (row["task"], row["metric"], row["n"]) == ("wikitext2", "bits_per_byte", 2)
    assert row["value"] == pytest.approx(nll / math.log(2) / len(text.encode("utf-8")), rel=1e-6)


def test_limit_takes_the_first_examples(tmp_path, tokenizer, settings):
    model = tiny_model()
    first = ev.read_lambada(LAMBADA)[:9]
    sliced = tmp_path / "lambada9.jsonl"
    sliced.write_text("".join(json.dumps({"text": t}) + "\n" for t in first))
    limited = ev.Evaluator(settings(limit=9), tokenizer, seq_len=64, eod_id=0).run(model, 0)
    whole = ev.Evaluator(settings(tasks=["lambada"], lambada_path=str(sliced)), tokenizer,
                         seq_len=64, eod_id=0).run(model, 0)
    assert [r["n"] for r in limited] == [9, 9, 9]  # 9 passages; 9 of the 12 articles
    assert [r["value"] for r in limited[:2]] == pytest.approx([r["value"] for r in whole], rel=1e-6)
    two = ev.Evaluator(settings(tasks=["wikitext2"], limit=2, wikitext_path=str(WIKITEXT)), tokenizer,
                       seq_len=64, eod_id=0)
    assert two.bytes == sum(len(a.encode()) for a in ev.wikitext_articles(WIKITEXT.read_text())[:2])


class Counting:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, tokens):
        self.calls += 1
        return self.model(tokens)


def test_ranks_share_examples_and_make_equal_forward_calls(tokenizer, settings):
    """Three ranks, simulated: each scores its share (examples r, r+3, ...), all make the same
    number of forward calls (ZeRO-3 gathers parameters in every one), and the reduced sums give
    one rank's figures."""
    model = tiny_model()
    s = settings(limit=7, batch_size=2)
    alone = ev.Evaluator(s, tokenizer, seq_len=64, eod_id=0).run(model, 0)
    world, partials, calls = 3, [], []
    evaluators = [ev.Evaluator(s, tokenizer, seq_len=64, eod_id=0, rank=r, world=world) for r in range(world)]
    for e in evaluators:
        counting = Counting(model)
        e.run(counting, 0, reduce_sum=lambda t: partials.append(t.clone()) or t, device="cpu")
        calls.append(counting.calls)
    assert len(set(calls)) == 1, calls
    # The shares differ in size (7 passages over 3 ranks), so some ranks padded their calls.
    assert len({len(e.batches["lambada"]) + len(e.batches["wikitext2"]) for e in evaluators}) > 1
    total = sum(partials)
    for e in evaluators:
        rows = e.run(model, 0, reduce_sum=lambda t: total)
        assert [r["value"] for r in rows] == pytest.approx([r["value"] for r in alone], rel=1e-9)
        assert [r["n"] for r in rows] == [r["n"] for r in alone]


def test_bad_settings_name_the_key(tokenizer, tmp_path, settings):
    with pytest.raises(FileNotFoundError, match="eval.lambada_path"):
        ev.Evaluator(settings(lambada_path=str(tmp_path / "missing.jsonl")), tokenizer, seq_len=64, eod_id=0)
    with pytest.raises(ValueError, match="eval.wikitext_path"):
        ev.Evaluator(settings(wikitext_path=None), tokenizer, seq_len=64, eod_id=0)
    with pytest.raises(ValueError, match="eval.tasks.*hellaswag"):
        ev.Evaluator(settings(tasks=["hellaswag"]), tokenizer, seq_len=64, eod_id=0)
    with pytest.raises(ValueError, match="eval.limit"):
        ev.Evaluator(settings(limit=0), tokenizer, seq_len=64, eod_id=0)


def test_due_every_n_steps_and_at_the_end():
    s = EvalConfig(every_steps=4)
    assert [step for step in range(1, 11) if ev.due(s, step, 10)] == [4, 8, 10]
    assert not any(ev.due(EvalConfig(), step, 10) for step in range(1, 11))  # 0: not in training
    assert not any(ev.due(EvalConfig(tasks=[], every_steps=1), step, 10) for step in range(1, 11))


def test_eval_log_replaces_rows_and_drops_redone_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    row = lambda step, value: {"step": step, "task": "lambada", "metric": "accuracy", "value": value, "n": 3}  # noqa: E731
    log = ev.EvalLog(tmp_path)
    log.write([row(10, 0.1)])
    log.write([row(20, 0.2)])
    log.write([row(20, 0.25)])  # the same checkpoint evaluated again
    log.close()
    lines = [json.loads(l) for l in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert lines == [row(10, 0.1), row(20, 0.25)]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/lambada/accuracy")][:2] == [10, 20]
    ev.EvalLog(tmp_path, tensorboard=False, resume_step=15).close()  # a run resumed from step 15
    assert [json.loads(l) for l in (tmp_path / "eval.jsonl").read_text().splitlines()] == [row(10, 0.1)]


# --- the same figures from plain transformers code ---------------------------------------------

def _memorized_model(tokenizer, passages, seq_len=64, steps=60):
    """A tiny LLaMA-layout model trained on the ends of every other passage, so that it knows
    some of the last words and not others."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=4, d_model=64, seq_len=seq_len, vocab_size=512))
    rows = torch.tensor([tokenizer.encode(p, add_special_tokens=False).ids[-(seq_len + 1):] for p in passages[::2]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        _, loss = model(rows[:, :-1], rows[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def _hf_lambada(model, tok, passages, max_length):
    """lm-evaluation-harness's loglikelihood for lambada_openai, written out: the continuation's
    tokens are the whole text's tokens after the context's."""
    lls, greedy = [], []
    for text in passages:
        context, word = text.rsplit(" ", 1)
        continuation = " " + word
        whole = tok(context + continuation, add_special_tokens=False).input_ids
        context_enc = tok(context, add_special_tokens=False).input_ids
        cont = whole[len(context_enc):]
        inp = torch.tensor([(context_enc + cont)[-(max_length + 1):][:-1]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(inp).logits[0, -len(cont):].float(), dim=-1)
        greedy.append(logprobs.argmax(-1).tolist() == cont)
        lls.append(float(logprobs[torch.arange(len(cont)), torch.tensor(cont)].sum()))
    return sum(greedy) / len(greedy), math.exp(-sum(lls) / len(lls))


def _hf_bits_per_byte(model, tok, text, max_length, stride, eos_id):
    """Each article after the end-of-text token, in windows of max_length that advance by
    `stride`, each token scored in the first window whose inputs end right before it."""
    import re

    starts = [m.start() for m in re.finditer(r"^ = [^=\n].* = $", text, flags=re.MULTILINE)]
    starts[0] = 0
    articles = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    nats = 0.0
    for article in articles:
        ids = [eos_id] + tok(article, add_special_tokens=False).input_ids
        done = 0  # ids[1 .. done] are scored
        for begin in range(0, len(ids) - 1, stride):
            end = min(begin + max_length, len(ids) - 1)
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([ids[begin:end]])).logits[0].float(), -1)
            for t in range(done + 1, end + 1):  # token t is predicted at position t - 1 - begin
                nats -= float(logprobs[t - 1 - begin, ids[t]])
            done = end
            if end == len(ids) - 1:
                break
    return nats / math.log(2) / len(text.encode("utf-8"))


def test_transformers_gives_the_same_figures_for_an_exported_checkpoint(tmp_path, tokenizer, settings, small_wiki):
    transformers = pytest.importorskip("transformers")
    from pretrain import export

    passages = ev.read_lambada(LAMBADA)[:24]
    trained = _memorized_model(tokenizer, passages)
    state = {k: v for k, v in trained.state_dict().items() if k != "lm_head.weight"}  # tied
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    manifest = {"tokenizer": {"path": "tokenizer.json", "eod_id": 0, "eod_token": EOD}}
    export.save(trained.cfg, state, tmp_path / "export" / "model")
    export.save_hf(trained.cfg, state, tmp_path / "export" / "hf", manifest, tmp_path)

    ours = export.load(tmp_path / "export" / "model")
    s = settings(limit=24, batch_size=8)
    rows = {(r["task"], r["metric"]): r["value"]
            for r in ev.Evaluator(s, tokenizer, seq_len=64, eod_id=0).run(ours, step=0)}

    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "hf", dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "export" / "hf")
    accuracy, perplexity = _hf_lambada(hf, hf_tok, passages, max_length=64)
    bpb = _hf_bits_per_byte(hf, hf_tok, small_wiki.read_text(encoding="utf-8"), 64, 32, hf.config.eos_token_id)

    assert 0 < accuracy < 1, accuracy  # the model knows some last words, not all
    assert rows[("lambada", "accuracy")] == pytest.approx(accuracy, abs=1e-9)
    assert rows[("lambada", "perplexity")] == pytest.approx(perplexity, rel=1e-4)
    assert rows[("wikitext2", "bits_per_byte")] == pytest.approx(bpb, rel=1e-5)


# --- the command line -----------------------------------------------------------------------

@pytest.mark.slow
def test_command_line_evaluates_the_latest_checkpoint(micro_sweep, capsys):
    run = micro_sweep / "0_scale_1"
    paths = [f"eval.lambada_path={LAMBADA}", f"eval.wikitext_path={WIKITEXT}"]
    ev.main([str(run), *paths, "eval.limit=6", "eval.batch_size=4"])
    rows = [json.loads(l) for l in (run / "eval.jsonl").read_text().splitlines()]
    assert [(r["step"], r["task"], r["metric"], r["n"]) for r in rows] == [
        (4, "lambada", "accuracy", 6), (4, "lambada", "perplexity", 6), (4, "wikitext2", "bits_per_byte", 6)]
    assert 0 <= rows[0]["value"] <= 1 and rows[1]["value"] > 1 and rows[2]["value"] > 0
    out = capsys.readouterr().out
    assert f"wikitext2  bits_per_byte  {rows[2]['value']:>10.4f}" in out and "step 4" in out

    # Again, LAMBADA only, on more passages: its rows are replaced, WikiText's stay.
    ev.main([str(run), *paths, "eval.limit=10", "eval.tasks=[lambada]"])
    again = [json.loads(l) for l in (run / "eval.jsonl").read_text().splitlines()]
    assert [(r["task"], r["n"]) for r in again] == [("wikitext2", 6), ("lambada", 10), ("lambada", 10)]

    for args, message in [(["eval.lambada_path=/nonexistent/lambada.jsonl"], "eval.lambada_path"),
                          (["train.max_steps=3"], "only eval.* keys"),
                          (["eval.bogus=1"], "bogus"),
                          (["eval.limit=many"], "eval.limit")]:
        with pytest.raises(SystemExit) as e:
            ev.main([str(run), *paths, *args])
        assert message in str(e.value), (args, e.value)


def test_data_paths_follow_ccp_shared_data(monkeypatch):
    from hydra.errors import HydraException

    monkeypatch.setenv("CCP_SHARED_DATA", "/data/elsewhere")
    s = ev.settings_from(["eval.limit=5"])
    assert s.lambada_path == "/data/elsewhere/eval/lambada_test.jsonl"
    assert s.wikitext_path == "/data/elsewhere/reference/wikitext-2_test.txt"
    assert s.limit == 5 and s.tasks == ["lambada", "wikitext2"]
    with pytest.raises(HydraException, match="bogus"):
        ev.settings_from(["eval.bogus=1"])
