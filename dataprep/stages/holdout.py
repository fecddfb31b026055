"""Stage `holdout` (output_dir/holdout/): the documents of each mixture source held out for
validation, chosen by a hash of their id among the tokenized documents, before the mixture plans
any copy (dataprep/holdout.py); then one Ray task per tokenized file finds the training documents
that share a span of `validation.overlap_tokens` tokens with a held-out one, which stay out of
training. The held-out spans' hashes are `holdout/<digest>/spans.npy`, the digest naming the
held-out set, so the tasks' completion markers belong to one set."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from dataprep import holdout
from dataprep.fingerprint import Fingerprint
from dataprep.layout import CorpusLayout
from dataprep.shards import IndexedShard
from dataprep.source_tokens import SourceTokens
from dataprep.stages import StageInputs, source_task_name, tokenize
from dataprep.tasks import TaskRunner

NAME = "holdout"


@dataclass
class Split:
    """One source's documents, split three ways."""

    tokens: SourceTokens
    validation: np.ndarray  # held out, in hash order (the order of the validation shards)
    overlapping: np.ndarray  # left out of training: they share a span with a held-out document

    @property
    def training(self) -> np.ndarray:
        """The documents the mixture may use, in order."""
        keep = np.ones(len(self.tokens), dtype=bool)
        keep[self.validation] = False
        keep[self.overlapping] = False
        return np.flatnonzero(keep)


def overlap_task(tokens: str, spans: str, n: int, skip: list[int]) -> dict:
    """The documents of one tokenized file that share a run of n tokens with a held-out document
    (`spans`: the held-out runs' hashes, sorted), other than the held-out ones (`skip`)."""
    t0 = time.perf_counter()
    shard = IndexedShard(tokens)
    rows = holdout.overlapping_rows(shard, np.load(spans, mmap_mode="r"), n, skip)
    return {"docs_in": len(shard), "overlapping": rows, "seconds": time.perf_counter() - t0}


def _save_spans(layout: CorpusLayout, spans: np.ndarray, key: bytes) -> str:
    """spans.npy in the folder named after the held-out set; other sets' folders are removed."""
    folder = layout.stage_dir(NAME) / hashlib.sha256(key + spans.tobytes()).hexdigest()[:16]
    if layout.stage_dir(NAME).is_dir():
        for old in layout.stage_dir(NAME).iterdir():
            if old != folder:
                shutil.rmtree(old)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spans.npy"
    if not path.is_file():
        with open(path.with_name("spans.npy.tmp"), "wb") as f:
            np.save(f, spans)
        os.replace(path.with_name("spans.npy.tmp"), path)
    return str(path)


def run(layout: CorpusLayout, inputs: StageInputs) -> tuple[dict[str, Split], dict]:
    """Each mixture source's documents, split into validation, overlapping and training."""
    v = inputs.cfg.validation
    t0 = time.perf_counter()
    sources = {name: SourceTokens(files) for name, files in inputs.outputs[tokenize.NAME].items()}
    none = np.zeros(0, dtype=np.int64)
    chosen = {name: holdout.choose(holdout.id_hashes(itertools.chain.from_iterable(s.column("id")), v.seed),
                                   s.lengths, v) if v.enabled else none
              for name, s in sources.items()}
    spans = np.unique(np.concatenate(
        [holdout.span_hashes(s.tokens(int(d)), v.overlap_tokens) for name, s in sources.items() for d in chosen[name]]
        or [np.zeros(0, dtype=np.uint64)]))
    tasks, where = {}, {}
    if len(spans):
        key = repr([v.overlap_tokens] + [(name, chosen[name].tolist()) for name in sources]).encode()
        spans_path = _save_spans(layout, spans, key)
        for name, s in sources.items():
            held_in = np.searchsorted(s.starts, chosen[name], side="right") - 1
            for f, (task, tf) in enumerate(s.files):
                skip = (chosen[name][held_in == f] - s.starts[f]).tolist()
                tasks[source_task_name(name, task)] = (tf.tokens, spans_path, v.overlap_tokens, skip)
                where[source_task_name(name, task)] = (name, int(s.starts[f]))
        # What shapes a task's answer: the span length, the held-out set (the folder names it) and
        # the tokenized file it reads.
        made = tokenize.fingerprints(inputs)
        held_out = os.path.basename(os.path.dirname(spans_path))
        fps = {task: Fingerprint({"validation.overlap_tokens": v.overlap_tokens},
                                 upstream={"tokens": made[task].digest, "held_out": held_out}) for task in tasks}
        results = TaskRunner(NAME, os.path.dirname(spans_path), inputs.reruns).run(overlap_task, tasks, fps)
    else:
        results = {}
    overlapping = {name: [] for name in sources}
    for task, r in results.items():
        name, first = where[task]
        overlapping[name].extend(first + row for row in r["overlapping"])
    splits = {name: Split(s, chosen[name], np.array(sorted(overlapping[name]), dtype=np.int64))
              for name, s in sources.items()}
    by_source = {name: {"documents": len(s.tokens), "held_out": len(s.validation),
                        "held_out_tokens": int(s.tokens.lengths[s.validation].sum()),
                        "overlaps_held_out": len(s.overlapping)} for name, s in splits.items()}
    held, overlaps = (sum(b[k] for b in by_source.values()) for k in ("held_out", "overlaps_held_out"))
    docs = sum(len(s) for s in sources.values())
    stats = {"docs_in": docs, "docs_out": docs - held - overlaps,
             "dropped": {k: n for k, n in (("held_out", held), ("overlaps_held_out", overlaps)) if n},
             "seconds": round(time.perf_counter() - t0, 3), "by_source": by_source}
    return splits, {"stages": {NAME: stats}}
