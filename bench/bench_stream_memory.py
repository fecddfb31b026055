"""Peak memory of two corpus writers as their input grows, against what they held before.

    python bench/bench_stream_memory.py                          # ~15 minutes on 2 cores
    python bench/bench_stream_memory.py --jsonl-docs 25000 100000 400000 --shard-docs 200000 800000 3200000

Each figure is the growth of a fresh process's memory over the run of one writer, its inputs
written beforehand by this script and its imports done: the peak of its anonymous resident memory
(RssAnon, sampled every 2 ms: what it allocates) and of all its resident memory (VmHWM after
resetting the high-water mark through /proc/self/clear_refs: this also counts the pages of the
memory-mapped files it reads, which the kernel can drop under pressure). Linux only.

1. `python -m dataprep.dedup_job`'s JSON lines -> Parquet task (`jsonl_to_parquet_task`) on a file
   of N documents of about 1 KB: the sample's C4 texts (text/olmo_c4-sample.*) repeated, each
   prefixed with its number, to N lines. Baseline, in the same run: the task as it was, every
   line parsed into one list, then one Arrow table of the file.
2. The shards stage's writer on one tokenized source of N documents in files of 2,000 (3 tokens
   each, ids and urls of 250 characters): `SourceTokens` (token counts), `write_metadata`, the
   mixture plan (2 epochs) and `write_training` into shards of 65,536 documents (2N lineage
   rows). Baseline: what the earlier writer held beside that, alone (each document's id, url and
   file as Python lists, and a shard's lineage rows as dicts): a lower bound of its peak.

The last line reads `stream memory: jsonl <a> -> <b> MiB for 4x the documents (...)`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FILE_DOCS = 2_000  # documents per tokenized file
SHARD_ROWS = 65_536  # documents per shard (3 tokens each)
SHARED = Path(__import__("os").environ.get("CCP_SHARED_DATA", REPO.parent / "shared" / "data"))


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


class Peak:
    """The growth of RssAnon's peak (sampled) and of VmHWM over a `with` block, MiB."""

    def __enter__(self) -> "Peak":
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.rss, self.anon = _status_mib("VmRSS"), _status_mib("RssAnon")
        self.anon_peak, self._stop = self.anon, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.anon_peak = max(self.anon_peak, _status_mib("RssAnon"))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.anon_peak = max(self.anon_peak, _status_mib("RssAnon"))
        self.result = (self.anon_peak - self.anon, _status_mib("VmHWM") - self.rss)


# --- inputs -----------------------------------------------------------------------------------

def write_jsonl(path: Path, n: int) -> None:
    texts = []
    for f in sorted((SHARED / "text").glob("olmo_c4-sample.*.json.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"][:1000] for line in fh if line.strip()]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"doc-{i}", "text": f"{i} {texts[i % len(texts)]}", "url": f"https://example.org/{i}"}) + "\n")


def write_tokenized(folder: Path, n: int) -> None:
    """A tokenized source of n documents in files of FILE_DOCS, as the tokenize stage writes them."""
    import pyarrow as pa

    from dataprep.documents import write_table
    from dataprep.shards import ShardWriter
    from dataprep.stages.tokenize import TOKENS_SCHEMA

    for f, first in enumerate(range(0, n, FILE_DOCS)):
        i = np.arange(first, min(n, first + FILE_DOCS))
        with ShardWriter(folder, f"task{f:04d}_00000", np.uint16, shard_tokens=1 << 40) as w:
            for k in i:
                w.add_document(np.array([1 + k % 50, 2, 0]))
        write_table(pa.table({"id": [f"id-{k:012d}-{'x' * 34}" for k in i],
                              "url": [f"https://example.org/{k:012d}/{'p' * 168}" for k in i],
                              "source": [f"file{f:04d}.jsonl.gz"] * len(i), "tokens": np.full(len(i), 3)},
                             schema=TOKENS_SCHEMA), folder / f"task{f:04d}.parquet")


def tokenized_files(folder: Path) -> dict:
    from dataprep.stages.tokenize import TokenizedFile

    return {p.stem: TokenizedFile(str(folder / f"{p.stem}_00000_00000"), str(p)) for p in sorted(folder.glob("task*.parquet"))}


# --- the measured runs, each in a fresh process -------------------------------------------------

def child(kind: str, variant: str, path: str) -> tuple[float, float]:
    import dataprep.dedup_job  # noqa: F401 - imported before the measurement, as run's imports
    import dataprep.source_tokens  # noqa: F401
    import dataprep.stages.shards  # noqa: F401

    with Peak() as peak:
        run(kind, variant, Path(path))
    return peak.result


def run(kind: str, variant: str, folder: Path) -> None:
    import pyarrow as pa

    from dataprep import mixture
    from dataprep.dedup_job import jsonl_to_parquet_task
    from dataprep.documents import write_table
    from dataprep.readers import read_jsonl
    from dataprep.source_tokens import SourceTokens
    from dataprep.stages import holdout, shards

    if kind == "jsonl" and variant == "ours":
        jsonl_to_parquet_task(str(folder / "in.jsonl"), str(folder / "ours.parquet"))
    elif kind == "jsonl":
        rows = [row for _, row in read_jsonl(folder / "in.jsonl")]
        write_table(pa.Table.from_struct_array(pa.array(rows)), folder / "baseline.parquet", 1024, use_dictionary=False)
    else:
        src = SourceTokens(tokenized_files(folder))
        if variant == "ours":
            src.write_metadata(folder / "metadata")
            none = np.zeros(0, dtype=np.int64)
            mix = mixture.plan({"web": src.lengths}, {"web": 1.0}, anchor="web", anchor_epochs=2.0)
            shards.write_training(folder / "set", mix, {"web": holdout.Split(src, none, none)}, np.dtype("<u2"), 3 * SHARD_ROWS)
        else:
            held = [[v for batch in src.column(c) for v in batch] for c in ("id", "url", "source")]
            rows = [{"mixture_source": "web", "id": held[0][d % len(src)], "url": held[1][d % len(src)],
                     "source": held[2][d % len(src)], "copy": d // len(src), "sequence": d, "offset": 3 * d, "tokens": 3}
                    for d in range(min(2 * len(src), SHARD_ROWS))]
            assert len(held[0]) == len(src) and rows


def measure(kind: str, variant: str, folder: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, variant, str(folder)], capture_output=True,
                         text=True, check=True)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jsonl-docs", type=int, nargs="+", default=[25_000, 100_000])
    parser.add_argument("--shard-docs", type=int, nargs="+", default=[50_000, 200_000, 800_000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    results = {"jsonl": {}, "shards": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, sizes, make in (("jsonl", args.jsonl_docs, lambda f, n: write_jsonl(f / "in.jsonl", n)),
                                  ("shards", args.shard_docs, write_tokenized)):
            print(f"{kind:7s} {'documents':>10s}  {'anonymous MiB: ours':>19s} {'baseline':>9s} {'ratio':>6s}"
                  f"  {'resident MiB: ours':>18s} {'baseline':>9s}")
            for n in sizes:
                folder = Path(tmp) / f"{kind}_{n}"
                folder.mkdir()
                make(folder, n)
                (ours, ours_rss), (base, base_rss) = measure(kind, "ours", folder), measure(kind, "baseline", folder)
                results[kind][n] = ours
                print(f"{kind:7s} {n:>10,d}  {ours:19.1f} {base:9.1f} {base / max(ours, 0.1):5.1f}x  {ours_rss:18.1f} {base_rss:9.1f}")
    (a, b), (c, d) = ([r[min(r)], r[max(r)]] for r in results.values())
    print(f"stream memory: jsonl {a:.1f} -> {b:.1f} MiB for {max(args.jsonl_docs) / min(args.jsonl_docs):.0f}x the "
          f"documents; shards {c:.1f} -> {d:.1f} MiB for {max(args.shard_docs) / min(args.shard_docs):.0f}x (anonymous)")


if __name__ == "__main__":
    main()
