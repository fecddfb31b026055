"""Benchmark the quality classifier's training in the driver: peak memory and time against the
size of the crawl, with the training set bounded (quality.max_train_docs) and without.

The corpus is built from the real documents by repetition and perturbation: negative i is crawl
document i mod B of text/ (Dolma, C4), positive i reference chunk i mod B' of reference/ (books,
Wikipedia, Shakespeare in 3,000-character chunks), each with its copy number and a few of its
words shuffled appended, so no two are the same string. Both stream into `quality.train` (as the
corpus job's negatives stream from its Parquet files), so what a run holds is what training
keeps. Each run is alone in a fresh process; printed: its peak resident memory (Linux VmHWM) above
the process's size after its imports, its time, and the ratio of the unbounded run's to ours.

Run from the repository root:
  python bench/bench_quality.py [--docs 5000 20000 40000] [--max-train-docs 5000]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from dataprep import quality

DEFAULT_ROOT = Path(os.environ.get("CCP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
UNBOUNDED = 10**12


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _perturbed(base: list[str], n: int, prefix: str):
    """n (key, text) examples: base[i mod len(base)] with its copy number and 20 of its words,
    shuffled, appended."""
    rng = random.Random(0)
    for i in range(n):
        text = base[i % len(base)]
        words = text.split()
        tail = rng.sample(words, min(20, len(words)))
        yield f"{prefix}{i}", f"{text}\n{i} {' '.join(tail)}"


def _train(root: str, n: int, max_train_docs: int) -> tuple[float, float, float, dict]:
    """In a fresh process: (MiB after imports, peak MiB, seconds, the model's info)."""
    root_path = Path(root)
    crawl = []
    for path in sorted((root_path / "text").glob("*.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            crawl += [json.loads(line)["text"] for line in f]
    reference = [t for _, t in quality.reference_documents([str(root_path / "reference" / "*.txt")], 3000)]
    quality.FeatureSettings().vectorizer().transform(["warm up the imports"])
    from sklearn.linear_model import LogisticRegression  # noqa: F401, PLC0415 - imported before measuring
    before = _vm_hwm_mib()
    t0 = time.perf_counter()
    model = quality.train(_perturbed(reference, n, "p"), _perturbed(crawl, n, "n"), quality.FeatureSettings(),
                          max_train_docs=max_train_docs)
    return before, _vm_hwm_mib(), time.perf_counter() - t0, model.info


def measure(root: Path, n: int, max_train_docs: int) -> tuple[float, float, dict]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        before, peak, seconds, info = pool.submit(_train, str(root), n, max_train_docs).result()
    return peak - before, seconds, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--docs", type=int, nargs="+", default=[5000, 20000, 40000],
                    help="positives and negatives each (the crawl's size)")
    ap.add_argument("--max-train-docs", type=int, default=5000)
    args = ap.parse_args()
    print(f"quality classifier training, 5 folds, 2^18 features; ours: quality.max_train_docs={args.max_train_docs}; "
          f"baseline: every document (unbounded)")
    print(f"{'docs per label':>14} {'ours MiB':>9} {'ours s':>7} {'baseline MiB':>13} {'baseline s':>11} "
          f"{'memory ratio':>13}  ours held-out ROC AUC / baseline")
    for n in args.docs:
        ours, ours_s, ours_info = measure(args.root, n, args.max_train_docs)
        base, base_s, base_info = measure(args.root, n, UNBOUNDED)
        print(f"{n:>14,} {ours:>9.0f} {ours_s:>7.1f} {base:>13.0f} {base_s:>11.1f} {base / ours:>12.2f}x  "
              f"{ours_info['roc_auc']} / {base_info['roc_auc']} (trained on {ours_info['trained_negatives']:,} / "
              f"{base_info['trained_negatives']:,} negatives)", flush=True)


if __name__ == "__main__":
    main()
