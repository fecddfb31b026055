"""Decontamination: the index of evaluation n-grams the job ships to its tasks (a sorted array of
64-bit hashes, dataprep/decontam.py) against the obvious baseline, a Python set of the n-gram
strings (words joined by spaces), on the shipped evaluation sets (LAMBADA's test passages and
WikiText-2's test articles, `<unk>` as its placeholder).

For each: the memory it holds (tracemalloc's peak while building it, and its size once built),
the build time, and the lookup rate over the Common Crawl documents of the Dolma sample
(``<data-root>/text/dolma_CC*.jsonl.gz``, 697 documents) and WikiText-2's 62 test articles
themselves (4.1 MB in all), in batches of 1,024; both must find the same contaminated documents
(checked). Prints the ratios ours / baseline.

Run from the repository root:  python bench/bench_decontam.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_ROOT = Path(os.environ.get("CCP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
N = 13
WORD = re.compile(r"\w+")


def eval_sets(root: Path):
    from dataprep.config import DecontamConfig, EvalSetConfig

    return DecontamConfig(sets={
        "lambada": EvalSetConfig(kind="jsonl", paths=[str(root / "eval" / "lambada_test.jsonl")]),
        "wikitext2_test": EvalSetConfig(kind="text", paths=[str(root / "reference" / "wikitext-2_test.txt")],
                                        split="headings", placeholder="<unk>")})


def ours(cfg):
    from dataprep.decontam import build_index
    from dataprep.stages.decontam import eval_texts

    index, _ = build_index({name: eval_texts(cfg, name, []) for name in cfg.sets}, N,
                           {name: s.placeholder for name, s in cfg.sets.items() if s.placeholder})
    return index, lambda texts: set(index.matches(texts)[0].tolist())


def baseline(cfg):
    from dataprep.stages.decontam import eval_texts

    grams: set[str] = set()
    for name, s in cfg.sets.items():
        for text in eval_texts(cfg, name, []):
            for piece in text.split(s.placeholder) if s.placeholder else [text]:
                words = WORD.findall(piece.casefold())
                grams.update(" ".join(words[i:i + N]) for i in range(len(words) - N + 1))

    def matches(texts):
        found = set()
        for t, text in enumerate(texts):
            words = WORD.findall(text.casefold())
            if any(" ".join(words[i:i + N]) in grams for i in range(len(words) - N + 1)):
                found.add(t)
        return found

    return grams, matches


def measure(make, cfg, docs: list[str], repeat: int) -> dict:
    tracemalloc.start()
    t0 = time.perf_counter()
    index, matches = make(cfg)
    built = time.perf_counter() - t0
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    best, found = float("inf"), set()
    for _ in range(repeat):
        t0 = time.perf_counter()
        found = set()
        for i in range(0, len(docs), 1024):
            found |= {i + t for t in matches(docs[i:i + 1024])}
        best = min(best, time.perf_counter() - t0)
    del index
    return {"held_mb": held / 2**20, "peak_mb": peak / 2**20, "build_s": built, "lookup_s": best, "found": found}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from dataprep.config import MixtureSourceConfig
    from dataprep.mixture import read_source_file
    from dataprep.readers import glob_files

    from dataprep.decontam import build_index  # noqa: F401 - imported before memory is traced
    from dataprep.shingling import word_hashes
    from dataprep.stages.decontam import eval_texts  # noqa: F401

    word_hashes(["the casefold table, built once per process (4 MiB), outside the measure"])
    cfg = eval_sets(args.data_root)
    docs = [d["text"] for path in glob_files([str(args.data_root / "text" / "dolma_CC*.jsonl.gz")])
            for d in read_source_file(path, "cc", MixtureSourceConfig(kind="jsonl"))]
    wiki = MixtureSourceConfig(kind="text", split="headings")
    docs += [d["text"] for d in read_source_file(args.data_root / "reference" / "wikitext-2_test.txt", "wt", wiki)]
    mb = sum(len(t.encode("utf-8")) for t in docs) / 1e6
    rows = {"ours: sorted uint64 array": measure(ours, cfg, docs, args.repeat),
            "baseline: Python set of n-gram strings": measure(baseline, cfg, docs, args.repeat)}
    a, b = rows.values()
    assert a["found"] == b["found"], (sorted(a["found"]), sorted(b["found"]))
    print(f"{len(docs)} documents, {mb:.2f} MB; {len(a['found'])} contaminated")
    print(f"{'':40} {'held MiB':>9} {'peak MiB':>9} {'build s':>8} {'lookup MB/s':>12}")
    for name, r in rows.items():
        print(f"{name:40} {r['held_mb']:9.1f} {r['peak_mb']:9.1f} {r['build_s']:8.2f} {mb / r['lookup_s']:12.1f}")
    print(f"decontam: index {a['held_mb']:.1f} MiB = {a['held_mb'] / b['held_mb']:.3f}x the set's; "
          f"lookup {b['lookup_s'] / a['lookup_s']:.2f}x as fast")


if __name__ == "__main__":
    main()
