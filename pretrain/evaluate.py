"""Zero-shot evaluation: LAMBADA last-word accuracy and perplexity, bits per byte on WikiText-2.

    python -m pretrain.evaluate runs/tiny                          # -> runs/tiny/eval.jsonl
    python -m pretrain.evaluate runs/tiny eval.limit=500 'eval.tasks=[lambada]'

The same code runs inside training (`Evaluator.run` on every rank, the examples shared out by
index). Each result is one row `{"step", "task", "metric", "value", "n"}`:

- `lambada` (OpenAI's detokenized LAMBADA, the version GPT-2 and GPT-3 report). Context: the
  passage up to its last space; target: a space and the last word. The context is cut from the
  left so that context + target fit seq_len + 1 tokens. `accuracy`: the share of passages whose
  every target token is the model's argmax given the passage so far (teacher-forced, which is
  what greedy decoding of the target's length gives, GPT-2's protocol). `perplexity`:
  exp(mean over passages of the target's summed negative log-likelihood in nats), the
  definition of lm-evaluation-harness's `lambada_openai`. `n`: passages.
- `wikitext2` `bits_per_byte`: the WikiText-2 test file cut into its articles (at ` = Title = `
  lines, so the pieces concatenate back to the file), each scored as one document following the
  end-of-document token, as in training: the sum of every token's negative log-likelihood in
  nats / ln 2 / the articles' UTF-8 bytes. Long articles go through windows of seq_len tokens
  that advance by `eval.wikitext_stride` (default seq_len // 2); each token is scored once, in
  the first window that reaches it, so all but the first seq_len tokens of an article see at
  least seq_len - stride tokens of context. Per byte, the figure does not depend on the
  tokenizer. `n`: articles.

Logits are used as the model returns them (over the padded vocabulary, like the training loss
and the exported Hugging Face model), in fp32 for the softmax.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from pretrain.config import EvalConfig

TASKS = ("lambada", "wikitext2")
METRICS = {"lambada": ("accuracy", "perplexity"), "wikitext2": ("bits_per_byte",)}
EVAL_FILE = "eval.jsonl"

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

def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `values` over all ranks (identity on one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _stat_dtype(device: torch.device) -> torch.dtype:
    # fp64 sums where the device has them (MPS does not).
    return torch.float32 if device.type == "mps" else torch.float64


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, (torch.device, str)):
        return torch.device(device)
    return next(model.parameters()).device


class Evaluator:
    """The tasks in `settings`, tokenized once; `run` evaluates a model on them.

    On `world` ranks, rank r takes examples r, r + world, ...; every rank makes the same number
    of forward calls (a rank with fewer batches runs a throw-away one, which ZeRO-3's parameter
    gathering needs), and the statistics are reduced once per run."""

    def __init__(self, settings: EvalConfig, tokenizer, *, seq_len: int, eod_id: Optional[int],
                 rank: int = 0, world: int = 1):
        self.settings = settings
        self.tasks = [t for t in TASKS if t in settings.tasks]
        self.n: dict[str, int] = {}
        self.batches: dict[str, list[_Batch]] = {}
        # Throw-away forward calls this rank makes so that all ranks make the same number.
        self.padding_forwards: dict[str, int] = {}
        self.bytes = 0
        encode = lambda texts: [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]  # noqa: E731
        limit = settings.limit
        if "lambada" in self.tasks:
            passages = read_lambada(_data_file(settings, "lambada_path"))[:limit]
            pairs = [lambada_split(p) for p in passages[rank::world]]
            contexts, targets = encode([c for c, _ in pairs]), encode([t for _, t in pairs])
            rows = [lambada_row(c, t, seq_len) for c, t in zip(contexts, targets)]
            # Rank r holds ceil((n - r) / world) passages; rank 0 the most.
            most = math.ceil(math.ceil(len(passages) / world) / settings.batch_size)
            self._add("lambada", len(passages), rows, most)
        if "wikitext2" in self.tasks:
            if eod_id is None:
                raise ValueError("bits per byte scores each article after the end-of-document token; "
                                 "the tokenizer has none (manifest tokenizer.eod_id)")
            path = _data_file(settings, "wikitext_path")
            articles = wikitext_articles(path.read_bytes().decode("utf-8"))[:limit]
            self.bytes = sum(len(a.encode("utf-8")) for a in articles)
            stride = settings.wikitext_stride or max(1, seq_len // 2)
            docs = [[eod_id] + ids for ids in encode(articles)]
            # Every rank windows all articles (cheap) to know the largest batch count of any rank.
            windows = [sum(len(stride_windows(d, seq_len, stride)) for d in docs[r::world]) for r in range(world)]
            rows = [w for d in docs[rank::world] for w in stride_windows(d, seq_len, stride)]
            self._add("wikitext2", len(articles), rows, math.ceil(max(windows) / settings.batch_size))

    def _add(self, task: str, n: int, rows: list, most_batches: int) -> None:
        self.n[task] = n
        self.batches[task] = _batches(rows, self.settings.batch_size)
        self.padding_forwards[task] = most_batches - len(self.batches[task])

    @torch.no_grad()
    def run(self, model: Callable[[torch.Tensor], torch.Tensor], step: int,
            reduce_sum: Callable[[torch.Tensor], Sequence[float] | torch.Tensor] = all_reduce_sum,
            device: Optional[torch.device | str] = None) -> list[dict]:
        """Rows {step, task, metric, value, n} for `model` (logits = model(token ids)); every
        rank must call it. reduce_sum(t) returns the element-wise sum over ranks of a 1-D float
        tensor on the model's device (the default all-reduces in place)."""
        device = torch.device(device) if device is not None else _model_device(model)
        was_training = isinstance(model, torch.nn.Module) and model.training
        if isinstance(model, torch.nn.Module):
            model.eval()
        try:
            stats = []
            for task in self.tasks:
                stats.append(self._score(model, task, device))
            totals = reduce_sum(torch.cat(stats)) if stats else torch.zeros(0)
        finally:
            if was_training:
                model.train()
        totals = [float(v) for v in (totals.tolist() if torch.is_tensor(totals) else totals)]
        rows, i = [], 0
        for task in self.tasks:
            n = self.n[task]
            if task == "lambada":
                correct, nll = totals[i:i + 2]
                i += 2
                rows.append(self._row(step, task, "accuracy", correct / n, n))
                rows.append(self._row(step, task, "perplexity", math.exp(min(nll / n, 700.0)), n))
            else:
                nll = totals[i]
                i += 1
                rows.append(self._row(step, task, "bits_per_byte", nll / math.log(2) / self.bytes, n))
        return rows

    @staticmethod
    def _row(step: int, task: str, metric: str, value: float, n: int) -> dict:
        return {"step": int(step), "task": task, "metric": metric, "value": value, "n": n}

    def _score(self, model, task: str, device: torch.device) -> torch.Tensor:
        dtype = _stat_dtype(device)
        batches = self.batches[task]
        if task == "lambada":
            sums = torch.zeros(2, dtype=dtype, device=device)  # passages all correct, summed NLL
        else:
            sums = torch.zeros(1, dtype=dtype, device=device)  # summed NLL
        for batch in batches:
            b = batch.to(device)
            logits = model(b.tokens)
            picked = logits[b.row, b.position].float()  # (k, vocab): only the scored positions
            nll = F.cross_entropy(picked, b.target, reduction="none")
            if task == "lambada":
                wrong = (picked.argmax(dim=-1) != b.target).to(dtype)
                per_wrong = torch.zeros(b.tokens.shape[0], dtype=dtype, device=device).index_add_(0, b.row, wrong)
                sums[0] += (per_wrong == 0).sum()
                sums[1] += nll.to(dtype).sum()
            else:
                sums[0] += nll.to(dtype).sum()
        for _ in range(self.padding_forwards[task]):
            model(torch.zeros(1, 1, dtype=torch.long, device=device))
        return sums


def evaluate(model: Callable[[torch.Tensor], torch.Tensor], tokenizer, settings: EvalConfig, step: int,
             rank: int = 0, world: int = 1,
             reduce_sum: Callable[[torch.Tensor], Sequence[float] | torch.Tensor] = all_reduce_sum, *,
             seq_len: int, eod_id: Optional[int], device: Optional[torch.device | str] = None) -> list[dict]:
    """One evaluation in one call (tokenizes the data each time; a training loop keeps an
    `Evaluator` instead). Every rank calls it and gets the same rows."""
    evaluator = Evaluator(settings, tokenizer, seq_len=seq_len, eod_id=eod_id, rank=rank, world=world)
    return evaluator.run(model, step, reduce_sum, device)


def due(settings: EvalConfig, step: int, max_steps: int) -> bool:
    """Whether training evaluates after `step` (1-based): every eval.every_steps and at the end;
    never when eval.every_steps is 0 (the default: `python -m pretrain.evaluate` afterwards)."""
    if not settings.tasks or settings.every_steps <= 0:
        return False
    return step == max_steps or step % settings.every_steps == 0


def load_tokenizer(manifest_path: str | Path):
    """(tokenizers.Tokenizer, end-of-document id) of a shard manifest."""
    from tokenizers import Tokenizer

    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no shard manifest at {manifest_path}: its tokenizer is needed to evaluate")
    tok = json.loads(manifest_path.read_text())["tokenizer"]
    return Tokenizer.from_file(str(manifest_path.parent / tok["path"])), tok.get("eod_id")


class EvalLog:
    """run_dir/eval.jsonl (one row per line) and TensorBoard scalars `eval/<task>/<metric>`;
    write from one process (rank 0).

    A row replaces an earlier one of the same step, task and metric (evaluating a checkpoint
    again updates it); with `resume_step`, rows after it (from steps a resumed run redoes)
    are dropped at once."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: Optional[int] = None):
        self.path = Path(run_dir) / EVAL_FILE
        self.rows = self._read()
        if resume_step is not None:
            self.rows = [r for r in self.rows if r["step"] <= resume_step]
            self._save()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def _read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        tmp.replace(self.path)

    def write(self, rows: list[dict]) -> None:
        keys = {(r["step"], r["task"], r["metric"]) for r in rows}
        self.rows = [r for r in self.rows if (r["step"], r["task"], r["metric"]) not in keys] + list(rows)
        self._save()
        if self.writer is not None:
            for r in rows:
                self.writer.add_scalar(f"eval/{r['task']}/{r['metric']}", r["value"], r["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_table(rows: list[dict]) -> str:
    lines = [f"{'task':<10} {'metric':<14} {'value':>10} {'n':>6}"]
    for r in rows:
        lines.append(f"{r['task']:<10} {r['metric']:<14} {r['value']:>10.4f} {r['n']:>6}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------

def settings_from(overrides: list[str]) -> EvalConfig:
    """conf/pretrain.yaml's `eval` section with `eval.*` overrides (checked against the schema)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pretrain.config import register

    for o in overrides:
        if not o.lstrip("+~").startswith("eval."):
            raise ValueError(f"{o!r}: only eval.* keys apply here (e.g. eval.limit=100)")
    register()
    conf_dir = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf_dir, version_base=None):
        cfg = compose(config_name="pretrain", overrides=overrides)
    return OmegaConf.to_object(cfg.eval)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.evaluate", description=__doc__.split("\n\n")[0],
        epilog="Rows go to RUN_DIR/eval.jsonl (and RUN_DIR/tensorboard) with the checkpoint's step.")
    parser.add_argument("checkpoint", help="run directory (its latest checkpoint), checkpoints folder or step_N folder")
    parser.add_argument("overrides", nargs="*", help="eval.* keys, e.g. eval.limit=100 'eval.tasks=[lambada]'")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)

    from hydra.errors import HydraException

    from pretrain import export
    from pretrain.checkpoint import COMPLETE, checkpoint_folder
    from pretrain.generate import load

    try:
        settings = settings_from(args.overrides)
        step_dir = checkpoint_folder(args.checkpoint)
    except (ValueError, FileNotFoundError, HydraException) as e:
        sys.exit(f"evaluate: {e}")
    step = int(json.loads((step_dir / COMPLETE).read_text())["step"])
    run_dir = step_dir.parent.parent
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    model, manifest_path, _ = load(step_dir)
    model.to(device)
    try:
        tokenizer, eod_id = load_tokenizer(manifest_path or export.run_config(step_dir).data.manifest)
        evaluator = Evaluator(settings, tokenizer, seq_len=model.cfg.seq_len, eod_id=eod_id)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"evaluate: {e}")
    rows = evaluator.run(model, step)
    log = EvalLog(run_dir)
    log.write(rows)
    log.close()
    print(format_table(rows))
    print(f"step {step} of {run_dir} on {device} in {time.perf_counter() - started:.1f}s -> {log.path}", flush=True)


if __name__ == "__main__":
    main()
