"""Tokenizer: a byte-level BPE trained here with Hugging Face `tokenizers`, or a tokenizer.json."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int, eod_token: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eod_token],
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
    """Token ids of each text, each followed by the end-of-document id."""
    return [enc.ids + [eod_id] for enc in tok.encode_batch(texts, add_special_tokens=False)]
