"""Benchmark fuzzy dedup: signatures vs datasketch, LSH + clustering time and memory at scale,
scaling over Ray workers and nodes.

1. Signatures, on the real documents (text/ crawl extracts, and reference/ books, Wikipedia and
   Shakespeare cut into 300-word documents): datasketch as the pipeline used it before (shingle
   sets, then MinHash.bulk, 128 permutations, SHA-1) vs ours (hashfunc "wordhash", and "sha1"
   whose values equal datasketch's). Documents per second of CPU time on one core (best of 3),
   and the ratio; also MinHash.bulk alone, its shingles given.
2. Scale, for each --docs N: a corpus built from the real documents by repetition and
   perturbation (document i is real document i mod B: 10% verbatim, 20% with 1% of its words
   substituted, 70% with 50% substituted, i.e. unrelated), in 20 Parquet files. The whole dedup
   runs on local Ray with 2 workers and --budget-mb per task; printed: each stage's wall time,
   LSH + clustering time (stages lsh + components + clusters), and, for every stage, the peak
   memory of its largest task rerun alone in a fresh process (peak resident memory, Linux VmHWM,
   less the process's size after imports and a first Parquet write and read), next to the
   model's records x bytes per record where the planner uses one, and the budget.
3. Scaling, on the --scaling-docs corpus: the whole dedup on 1 Ray worker, 2 workers, and a
   simulated 2-node ray.cluster_utils.Cluster (1 CPU per node).

Run from the repository root:
  python bench/bench_dedup.py [--docs 100000 1000000] [--budget-mb 128] [--partitions P]
                              [--scaling-docs 100000]
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from datasketch import MinHash
from ray.cluster_utils import Cluster

from dataprep import dedup, shingling
from dataprep.config import DedupConfig
from dataprep.dedup_stages import BAND_RECORD_BYTES, COMPONENT_EDGE_BYTES, EXACT_RECORD_BYTES, Deduplicator
from dataprep.documents import DOCUMENT_ROW_GROUP, write_table
from dataprep.fingerprint import Fingerprint
from dataprep.tasks import WORKER_ENV, TaskRunner, arrow_worker_memory

DEFAULT_ROOT = Path(os.environ.get("CCP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WORD = re.compile(r"\w+")
FILES = 20


def real_documents(root: Path, words_per_doc: int = 300) -> list[str]:
    docs = []
    for path in sorted((root / "text").glob("*.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs += [json.loads(line)["text"] for line in f]
    for path in sorted((root / "reference").glob("*.txt")):
        words = path.read_text(encoding="utf-8").split()
        docs += [" ".join(words[i:i + words_per_doc]) for i in range(0, len(words) - words_per_doc + 1, words_per_doc)]
    return docs


def best_cpu_seconds(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def bench_signatures(docs: list[str]) -> None:
    n = len(docs)
    shingle_sets = lambda: [list(set(shingling.shingles(t, 5))) for t in docs]
    sets = shingle_sets()
    t_sets = best_cpu_seconds(shingle_sets)
    t_bulk = best_cpu_seconds(lambda: MinHash.bulk(sets, num_perm=128, seed=1))
    t_word = best_cpu_seconds(lambda: dedup.MinHasher(128, 1, 5, "wordhash")(docs))
    t_sha1 = best_cpu_seconds(lambda: dedup.MinHasher(128, 1, 5, "sha1")(docs))
    baseline = n / (t_sets + t_bulk)
    print(f"\n== signatures: {n} real documents ({sum(map(len, sets))} shingles), 128 permutations, "
          f"5-word shingles, one core, CPU time, best of 3")
    print(f"  datasketch (shingle sets + MinHash.bulk)  {baseline:8.0f} docs/s")
    print(f"  datasketch MinHash.bulk alone (sets given) {n / t_bulk:8.0f} docs/s")
    print(f"  ours, hashfunc=wordhash                    {n / t_word:8.0f} docs/s   "
          f"{n / t_word / baseline:.2f}x datasketch ({t_bulk / t_word:.2f}x MinHash.bulk alone)")
    print(f"  ours, hashfunc=sha1 (= datasketch values)  {n / t_sha1:8.0f} docs/s   "
          f"{n / t_sha1 / baseline:.2f}x datasketch")


# --- a large corpus from the real documents ------------------------------------------------

def make_corpus_file(path: str, tokens: list[np.ndarray], vocab: np.ndarray, first: int, n: int) -> dict:
    """Documents first .. first + n - 1: document i is real document i mod B, verbatim (10%),
    with 1% of its words substituted (20%: near copies), or 50% (70%: unrelated)."""
    rng = np.random.default_rng(first)
    texts = []
    for i in range(first, first + n):
        words = tokens[i % len(tokens)].copy()
        kind = rng.random()
        if kind >= 0.1:
            swap = rng.random(len(words)) < (0.01 if kind < 0.3 else 0.5)
            words[swap] = rng.integers(0, len(vocab), int(swap.sum()))
        texts.append(" ".join(vocab[words]))
    write_table(pa.table({"id": [f"doc{i:08d}" for i in range(first, first + n)], "text": texts}), path,
                DOCUMENT_ROW_GROUP)
    return {"docs_in": n}


def make_corpus(folder: Path, docs: list[str], n: int) -> dict[str, str]:
    vocab_index: dict[str, int] = {}
    tokens = [np.array([vocab_index.setdefault(w, len(vocab_index)) for w in WORD.findall(t)], dtype=np.int32)
              for t in docs]
    tokens = [t for t in tokens if len(t) >= 50]
    vocab = np.array(list(vocab_index), dtype=object)
    per_file = -(-n // FILES)
    folder.mkdir(parents=True, exist_ok=True)
    tasks = {f"part{k:02d}": (str(folder / f"part{k:02d}.parquet"), tokens, vocab, k * per_file, min(per_file, n - k * per_file))
             for k in range(FILES) if k * per_file < n}
    TaskRunner("corpus", folder).run(make_corpus_file, tasks, Fingerprint({"documents": n, "files": FILES}))
    return {name: args[0] for name, args in tasks.items()}


def run_dedup(work: Path, files: dict[str, str], cfg: DedupConfig,
              runner: type[TaskRunner] = TaskRunner) -> tuple[dict, float]:
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    stats = Deduplicator(cfg, work / "work", runner).run(
        files, {n: str(work / "out" / f"{n}.parquet") for n in files},
        {n: str(work / "out" / "dropped" / f"{n}.parquet") for n in files})
    return stats, time.perf_counter() - t0


def _vm_hwm_mib() -> float:
    """This process's peak resident memory (Linux VmHWM: unlike ru_maxrss, not inherited from the
    process that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _alone(fn, args) -> tuple[float, float, float]:
    """Run fn(*args) in this fresh process: (MiB before, peak MiB, seconds). "Before" is after the
    imports and after one small Parquet write and read, as in a Ray worker that has run a task:
    Arrow's thread pools and allocator arenas (about 20 MiB) are a process's fixed cost, like its
    imports, not the task's data."""
    with tempfile.TemporaryDirectory() as tmp:
        write_table(pa.table({"x": np.arange(1000)}), Path(tmp) / "warm.parquet")
        pq.read_table(Path(tmp) / "warm.parquet")
    arrow_worker_memory()  # as TaskRunner does in a Ray worker
    before = _vm_hwm_mib()
    t0 = time.perf_counter()
    fn(*args)
    return before, _vm_hwm_mib(), time.perf_counter() - t0


def peak_memory(fn, args) -> tuple[float, float, float]:
    os.environ.update(WORKER_ENV)  # as in the Ray workers that run the tasks
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_alone, fn, args).result()


class RecordingRunner(TaskRunner):
    """A TaskRunner that keeps each stage's function, task arguments and results, so that the
    bench can rerun a stage's largest task alone (the rerun rewrites the same bytes)."""
    stages: dict[str, tuple] = {}

    def run(self, fn, tasks, fingerprints):
        results = super().run(fn, tasks, fingerprints)
        RecordingRunner.stages[self.stage] = (fn, tasks, results)
        return results


# What each stage's task holds, from its statistics, and the model's bytes per unit where the
# planner uses one (a large-star task reads each edge as two records, a small-star task as one).
SIZES = {"exact_hash": ("docs_in", None), "exact_groups": ("docs_in", EXACT_RECORD_BYTES),
         "minhash": ("docs_in", None), "lsh": ("records", BAND_RECORD_BYTES),
         "components: edges": ("edges", None), "large-star": ("records", COMPONENT_EDGE_BYTES // 2),
         "small-star": ("records", COMPONENT_EDGE_BYTES), "clusters": ("docs_in", None), "resolve": ("docs_in", None),
         "filter": ("docs_in", None)}


def bench_scale(work: Path, files: dict[str, str], n: int, budget_mb: float, partitions: int | None) -> None:
    cfg = DedupConfig(memory_budget_mb=budget_mb, partitions=partitions)
    RecordingRunner.stages.clear()
    stats, wall = run_dedup(work, files, cfg, RecordingRunner)
    w = stats["stage_wall_seconds"]
    lsh_time = w["lsh"] + w["components"] + w["clusters"]
    print(f"\n== scale: {n} documents built from the real ones by repetition and perturbation, "
          f"{len(files)} files, 2 Ray workers, budget {budget_mb:g} MiB per task, "
          f"partitions {partitions or 'from the budget'}")
    print(f"  plan: {stats['partitions']} partitions, {stats['bands']} bands x {stats['rows']} rows; "
          f"{stats['exact_duplicates']} exact and {stats['near_duplicates']} near duplicates, "
          f"{stats['clusters']} clusters (largest {stats['largest_cluster']}), "
          f"{stats['candidate_pairs']} candidate pairs -> {stats['edges']} edges (unique, verified); "
          f"connected components: {stats['component_partitions']} partitions, {stats['component_rounds']} rounds")
    print("  wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in w.items()) + f"; total {wall:.1f}")
    print(f"  LSH + clustering (lsh + components + clusters stages): {lsh_time:.1f} s "
          f"({n / lsh_time:.0f} docs/s); signatures + band records (minhash): "
          f"{w['minhash']:.1f} s ({n / w['minhash']:.0f} docs/s on 2 workers)")
    print(f"  each stage's largest task rerun alone in a fresh process: peak RSS above the process's "
          f"size before it; budget {budget_mb:g} MiB")
    largest: dict[str, tuple] = {}  # stage kind -> (size, fn, args); the rounds' steps pooled by kind
    for name, (fn, tasks, results) in RecordingRunner.stages.items():
        kind = next(k for k in SIZES if name == k or name.endswith(k))
        task = max(results, key=lambda t: results[t][SIZES[kind][0]])
        size = results[task][SIZES[kind][0]]
        if kind not in largest or size > largest[kind][0]:
            largest[kind] = (size, fn, tasks[task])
    for kind, (size, fn, args) in largest.items():
        base, peak, secs = peak_memory(fn, args)
        unit, per = SIZES[kind]
        model = f"; model {size * per / 2**20:.0f} MiB ({per} B each)" if per else ""
        print(f"  {kind:18s} {unit} {size:>9d}: {secs:5.1f} s, +{peak - base:4.0f} MiB "
              f"(peak {peak:.0f}, before {base:.0f}){model}  {'within' if peak - base <= budget_mb else 'OVER'} budget")


def bench_scaling(work: Path, files: dict[str, str], n: int) -> None:
    cfg = DedupConfig()
    print(f"\n== scaling: the whole dedup of {n} documents ({len(files)} files), wall seconds "
          f"(machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    results = {}
    for label, cpus in (("1 worker", 1), ("2 workers", 2)):
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        try:
            results[label] = run_dedup(work / label.replace(" ", "_"), files, cfg)
        finally:
            ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level=logging.WARNING)
        cluster.wait_for_nodes()
        results["2 nodes x 1 CPU"] = run_dedup(work / "two_nodes", files, cfg)
    finally:
        ray.shutdown()
        cluster.shutdown()
    one = results["1 worker"][1]
    for label, (stats, wall) in results.items():
        w = stats["stage_wall_seconds"]
        print(f"  {label:16s} {wall:6.1f} s  speedup {one / wall:.2f}x   (minhash {w['minhash']:.1f}, "
              f"lsh {w['lsh']:.1f}, components {w['components']:.1f}, clusters {w['clusters']:.1f}); "
              f"{stats['near_duplicates']} near duplicates")
    decisions = {label: (s["exact_duplicates"], s["near_duplicates"], s["clusters"]) for label, (s, _) in results.items()}
    print(f"  same decisions everywhere: {len(set(decisions.values())) == 1}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_dedup"))
    ap.add_argument("--docs", type=int, nargs="*", default=[100_000])
    ap.add_argument("--budget-mb", type=float, default=128)
    ap.add_argument("--partitions", type=int, default=None,
                    help="dedup.partitions for the --docs runs (every partitioned stage); default: from the budget")
    ap.add_argument("--scaling-docs", type=int, default=100_000, help="0: skip the scaling runs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    docs = real_documents(args.data_root)
    bench_signatures(docs)
    corpora = {}
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        for n in sorted(set(args.docs + ([args.scaling_docs] if args.scaling_docs else []))):
            corpora[n] = make_corpus(args.workdir / f"corpus_{n}", docs, n)
        for n in args.docs:
            bench_scale(args.workdir / f"scale_{n}", corpora[n], n, args.budget_mb, args.partitions)
    finally:
        ray.shutdown()
    if args.scaling_docs:
        bench_scaling(args.workdir / "scaling", corpora[args.scaling_docs], args.scaling_docs)


if __name__ == "__main__":
    main()
