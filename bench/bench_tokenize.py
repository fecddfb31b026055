"""Tokenization throughput: the corpus job's Ray tasks vs one process calling `encode_batch`.

Corpus: the reference texts in ``<data-root>/reference`` (Gutenberg books, WikiText-2, a
Wikipedia article, tinyshakespeare) cut into ~4,000-character documents and repeated until the
corpus holds ``--mb`` MB. The sample data is small, so the repetition is what makes it large
enough to time: every repeat is real text, and BPE cost does not depend on having seen it.

Tokenizer: GPT-2's tokenizer.json (``<data-root>/tokenizer/gpt2``), or ``--tokenizer``.

1. baseline: one process, all documents in memory, ``tokenize.encode_documents`` (one
   ``Tokenizer.encode_batch`` call per ``--batch`` documents, which uses the tokenizers library's
   own thread pool over every core).
2. ray: the corpus written as ``--files`` Parquet document files, each tokenized by the job's
   ``tokenize_task`` as a Ray task (read Parquet, encode_batch, write .bin/.idx + metadata), on a
   local Ray with ``--cpus`` CPUs; timed from submitting the tasks to the last result (Ray's start
   is reported apart).

Both count the same tokens (checked). Prints tokens/s for each and the ratio ray / baseline.

Run from the repository root:  python bench/bench_tokenize.py [--mb 8] [--files 8] [--cpus N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_ROOT = Path(os.environ.get("CCP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
EOD = "<|endoftext|>"


def build_corpus(root: Path, mb: float, doc_chars: int = 4000) -> list[str]:
    from dataprep.mixture import split_text

    base = []
    for path in sorted((root / "reference").glob("*.txt")):
        base += split_text(path.read_text(encoding="utf-8-sig"), "chunks", doc_chars)
    docs, size, target = [], 0, mb * 1e6
    while size < target:
        for d in base:
            docs.append(d)
            size += len(d.encode("utf-8"))
            if size >= target:
                break
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--tokenizer", type=Path, default=None)
    ap.add_argument("--mb", type=float, default=8.0, help="corpus size in MB of UTF-8 text")
    ap.add_argument("--files", type=int, default=8, help="Ray tasks (Parquet files)")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    ap.add_argument("--batch", type=int, default=1024, help="documents per encode_batch call (baseline)")
    args = ap.parse_args()

    import ray

    from dataprep import documents, tokenize
    from dataprep.stages.tokenize import tokenize_task

    tok_path = args.tokenizer or args.data_root / "tokenizer" / "gpt2" / "tokenizer.json"
    tok = tokenize.load_tokenizer(tok_path, EOD)
    eod = tok.token_to_id(EOD)
    docs = build_corpus(args.data_root, args.mb)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"corpus: {len(docs)} documents, {mb:.1f} MB (reference texts repeated); tokenizer {tok_path}; "
          f"{os.cpu_count()} cores")

    t0 = time.perf_counter()
    base_tokens = 0
    for i in range(0, len(docs), args.batch):
        base_tokens += sum(len(ids) for ids in tokenize.encode_documents(tok, docs[i:i + args.batch], eod))
    base_s = time.perf_counter() - t0
    print(f"baseline  1 process, encode_batch        {base_tokens:>11,} tokens  {base_s:7.2f} s  "
          f"{base_tokens / base_s:>12,.0f} tokens/s")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for f in range(args.files):
            part = docs[f::args.files]
            path = tmp / f"docs_{f}.parquet"
            documents.write_documents(path, [documents.new_document(f"{f}-{i}", t) for i, t in enumerate(part)])
            paths.append(path)
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
        start_s = time.perf_counter() - t0
        task = ray.remote(tokenize_task)
        try:
            ray.get(task.remote(str(paths[0]), str(tok_path), EOD, str(tmp / "warm"), "warm"))  # workers up
            t0 = time.perf_counter()
            results = ray.get([task.remote(str(p), str(tok_path), EOD, str(tmp / "out"), p.stem) for p in paths])
            ray_s = time.perf_counter() - t0
        finally:
            ray.shutdown()
    ray_tokens = sum(r["tokens"] for r in results)
    assert ray_tokens == base_tokens, (ray_tokens, base_tokens)
    print(f"ray       {args.files} tasks on {args.cpus} CPUs          {ray_tokens:>11,} tokens  {ray_s:7.2f} s  "
          f"{ray_tokens / ray_s:>12,.0f} tokens/s  (Ray start {start_s:.1f} s, not counted)")
    print(f"ratio ray / baseline: {base_s / ray_s:.2f}x")


if __name__ == "__main__":
    main()
