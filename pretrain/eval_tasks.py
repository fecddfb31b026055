"""The zero-shot tasks' data (pretrain/evaluate.py scores it): LAMBADA passages split into
context and last word, WikiText-2's test split cut into articles, each turned into rows of token
ids with the positions to score, batched right-padded."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pretrain.config import EvalConfig


# A WikiText article starts at its title line, " = Title = " (sections are " = = Title = = ").
_ARTICLE_TITLE = re.compile(r"^ = [^=\n].* = \n", re.MULTILINE)


# --- data -----------------------------------------------------------------------------------

def _data_file(settings: EvalConfig, key: str) -> Path:
    value = getattr(settings, key)
    if not value:
        raise ValueError(f"eval.{key} is not set (conf/pretrain.yaml points it into CCP_SHARED_DATA)")
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"eval.{key}: no file at {path} (set eval.{key}, or CCP_SHARED_DATA "
                                "to the folder that holds the sample data)")
    return path


def read_lambada(path: str | Path) -> list[str]:
    """The passages of a LAMBADA JSON-lines file (`{"text": ...}` per line)."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                text = json.loads(line).get("text")
                if not isinstance(text, str) or " " not in text.strip():
                    raise ValueError(f"{path}:{number}: expected {{\"text\": \"<passage> <word>\"}}")
                texts.append(text)
    return texts


def lambada_split(passage: str) -> tuple[str, str]:
    """(context, target): the passage up to its last space, and a space + the last word."""
    context, word = passage.rstrip().rsplit(" ", 1)
    return context, " " + word


def wikitext_articles(text: str) -> list[str]:
    """WikiText's articles; the text before the first title joins the first article, so the
    pieces concatenate back to `text`."""
    starts = [m.start() for m in _ARTICLE_TITLE.finditer(text)]
    if not starts:
        return [text] if text else []
    starts[0] = 0
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


# --- prepared batches -----------------------------------------------------------------------

@dataclass
class _Batch:
    """Right-padded token rows (one example or window each) and the (row, position) pairs to
    score, with their targets. The model is causal without a padding mask, so padding after a
    row's tokens changes nothing at the positions read."""

    tokens: torch.Tensor  # (rows, length) int64
    row: torch.Tensor  # (k,) int64
    position: torch.Tensor  # (k,)
    target: torch.Tensor  # (k,)

    @staticmethod
    def build(rows: list[tuple[list[int], int, list[int]]]) -> "_Batch":
        """rows: (input tokens, first position scored, targets of the positions scored)."""
        length = max(len(r[0]) for r in rows)
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        row, position, target = [], [], []
        for i, (ids, first, targets) in enumerate(rows):
            tokens[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            row += [i] * len(targets)
            position += range(first, first + len(targets))
            target += targets
        as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
        return _Batch(tokens, as_long(row), as_long(position), as_long(target))

    def to(self, device) -> "_Batch":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return _Batch(move(self.tokens), move(self.row), move(self.position), move(self.target))


def lambada_row(context: list[int], target: list[int], seq_len: int) -> tuple[list[int], int, list[int]]:
    """(input tokens, first scored position, targets) for one passage; the context is cut from
    the left so that the input (context + target without its last token) fits seq_len."""
    if not target:
        raise ValueError("a LAMBADA target encodes to no tokens")
    if len(target) > seq_len:
        raise ValueError(f"a LAMBADA target of {len(target)} tokens does not fit seq_len={seq_len}")
    keep = seq_len + 1 - len(target)
    context = context[-keep:]
    if not context:
        raise ValueError("a LAMBADA passage has an empty context")
    ids = (context + target)[:-1]
    return ids, len(context) - 1, list(target)


def stride_windows(doc: list[int], seq_len: int, stride: int) -> list[tuple[list[int], int, list[int]]]:
    """(input tokens, first scored position, targets) windows that score doc[1:] once each: a
    window reads doc[begin:end] and predicts doc[begin+1:end+1]; it scores only the targets
    that earlier windows did not."""
    if not 0 < stride <= seq_len:
        raise ValueError(f"eval.wikitext_stride={stride} must be in [1, seq_len={seq_len}]")
    out, scored = [], 0  # targets doc[1:scored+1] are done
    last = len(doc) - 1
    begin = 0
    while scored < last:
        end = min(begin + seq_len, last)
        first = scored - begin  # position (within the window) of the first new target
        out.append((doc[begin:end], first, doc[scored + 1:end + 1]))
        scored = end
        begin += stride
    return out


def _batches(rows: list, batch_size: int) -> list[_Batch]:
    # Longest first: similar lengths share a batch (less padding); sums do not care about order.
    rows = sorted(rows, key=lambda r: -len(r[0]))
    return [_Batch.build(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]


# --- evaluation -----------------------------------------------------------------------------
