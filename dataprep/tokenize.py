"""Tokenizer: a byte-level BPE trained here with Hugging Face `tokenizers`, or a tokenizer.json.

Every document is encoded without added special tokens and followed by the end-of-document id,
so documents stay separable in the flat token stream the shards hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int, eod_token: str,
              special_tokens: Sequence[str] = ()) -> Tokenizer:
    """A byte-level BPE (GPT-2's pre-tokenizer and 256-byte alphabet) trained on `texts`.

    The special tokens get the first ids: `eod_token` is 0, then `special_tokens` in order.
    """
    specials = [eod_token] + [t for t in special_tokens if t != eod_token]
    if len(set(specials)) != len(specials):
        raise ValueError(f"tokenizer.special_tokens has duplicates: {list(special_tokens)}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def load_tokenizer(path: str | Path, eod_token: str) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer.path={path}: no such file")
    tok = Tokenizer.from_file(str(path))
    if tok.token_to_id(eod_token) is None:
        raise ValueError(f"{path} has no end-of-document token {eod_token!r} (tokenizer.eod_token)")
    return tok


def encode_documents(tok: Tokenizer, texts: list[str], eod_id: int) -> list[list[int]]:
    """Token ids of each text, each followed by the end-of-document id.

    A special token's text inside a document (a web page quoting "<|endoftext|>") is encoded as
    plain text, so the end-of-document id only ever ends a document.
    """
    tok.encode_special_tokens = True
    return [enc.ids + [eod_id] for enc in tok.encode_batch(texts, add_special_tokens=False)]
