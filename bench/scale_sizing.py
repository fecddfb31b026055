"""Size one Common Crawl snapshot and a 1,000-GPU H200 run from rates measured on this machine
(docs/scale.md).

    python -m dataprep output_dir=/tmp/corpus            # the sample corpus (its funnel, its classifier)
    python bench/bench_dedup.py --docs 1000000 2000000 4000000 8000000 --scaling-docs 0 > dedup.log
    python bench/scale_sizing.py --corpus /tmp/corpus --dedup-log dedup.log

Measured in this run, each in a fresh process on one core (CPU seconds; peak resident memory
above the process's size after its imports): the extract task (ingest + extract + language id +
filters) on one sample WARC and on the same WARC's gzip members repeated 10x and 50x (a file the
size of nothing here, to show memory does not grow with it); quality scoring with the corpus's
classifier; the corpus's tokenizer on one thread; the shard writer. Read from the dedup log:
signatures per core, and the 1M-8M runs (time, edges, rounds, the largest task's memory), fitted
as c x N^b and extrapolated. Figures measured by other benches are quoted with their command.
Nothing is measured at the target size: the tables are arithmetic on measured rates, and say so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

# --- measured by other benches on this machine (command: figure) ---------------------------------
QUOTED = {
    # python bench/bench_decontam.py: the n-gram lookup, one core
    "decontam_bytes_per_core_s": 9.6e6,
    # python bench/bench_loader.py: the prefetching loader, one core
    "loader_tokens_per_core_s": 102817016.0,
    # python bench/bench_checkpoint.py: bytes per parameter of a bf16 run's checkpoint, by ZeRO stage
    "checkpoint_bytes_per_param": {1: 14.0, 2: 14.0, 3: 12.0},
    # python bench/bench_checkpoint.py: 125m, ZeRO-2, 1233.5 MB written in 5.40 s by 2 CPU ranks
    "checkpoint_bytes_per_s": 1233.5e6 / 5.40,
}
# The target: one Common Crawl snapshot (published sizes, round figures) and the training cluster.
SNAPSHOT = {"warc_bytes": 100e12, "pages": 3.0e9, "files": 90_000}
H200_PEAK, MFU, GPUS, GPUS_PER_NODE = 989e12, 0.5, 1000, 8  # dense bf16 peak; the MFU target
NODE_CORES, NODE_NIC_GBIT = 64, 100  # a CPU node of the data job: cores, network (assumed)
GPU_NET_BYTES_S = 50e9  # inter-node bandwidth per GPU (one 400 Gb/s NIC per GPU, assumed)
GLOBAL_BATCH_TOKENS = 1024 * 2048  # 2M tokens a step (GPT-3's 1.3b used 1M, its 6.7b 2M)
BUDGET_MIB, WORKER_BASE_MIB = 1024, 210  # dedup.memory_budget_mb default; a Ray worker's own size (docs/dedup.md)


# --- measured in this run, each alone in a fresh process -----------------------------------------

def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measured(fn, args) -> tuple[float, float, dict]:
    """fn(*args) here: (CPU seconds, peak MiB above the size before, what fn returns)."""
    before, t0 = _rss_mib("VmRSS"), time.process_time()
    out = fn(*args)
    return time.process_time() - t0, _rss_mib("VmHWM") - before, out


def alone(fn, *args) -> tuple[float, float, dict]:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_one_thread) as ex:
        return ex.submit(_measured, fn, args).result()


def _one_thread() -> None:
    os.environ["RAYON_NUM_THREADS"] = "1"  # the tokenizer's thread pool: one core
    importlib.import_module("torch").set_num_threads(1)  # imported before: part of a worker's baseline
    _import_dataprep()


def _import_dataprep() -> None:
    for name in ("dataprep.quality", "dataprep.shards", "dataprep.stages.extract", "tokenizers"):
        importlib.import_module(name)


def extract_file(path: str, work: str) -> dict:
    from dataprep.config import DataprepConfig
    from dataprep.stages.extract import extract_task
    return extract_task(path, f"{work}/kept.parquet", f"{work}/dropped.parquet", DataprepConfig())


def score(model_path: str, texts: list[str]) -> dict:
    from dataprep import quality
    model = quality.load(model_path)
    for i in range(0, len(texts), 1024):
        model.score(texts[i:i + 1024])
    return {"docs": len(texts), "bytes": sum(len(t.encode()) for t in texts)}


def tokenize(tokenizer_path: str, texts: list[str]) -> dict:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer_path)
    n = sum(len(e.ids) for i in range(0, len(texts), 256) for e in tok.encode_batch(texts[i:i + 256]))
    return {"tokens": n, "bytes": sum(len(t.encode()) for t in texts)}


def write_shards(folder: str, documents: int, length: int) -> dict:
    from dataprep.shards import ShardWriter
    doc = np.random.default_rng(0).integers(0, 50_000, length).astype(np.uint16)
    with ShardWriter(folder, "bench", np.uint16) as w:
        for _ in range(documents):
            w.add_document(doc)
    return {"tokens": documents * length}


def measure(corpus: Path, warc: Path, gpt2: Path) -> dict:
    """The rates this run measures: name -> (value, how)."""
    import pyarrow.parquet as pq
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for copies in (1, 10, 50):  # the same gzip members again and again: a bigger file, nothing else
            big = Path(tmp) / f"x{copies}.warc.gz"
            big.write_bytes(warc.read_bytes() * copies)
            secs, mib, got = alone(extract_file, str(big), tmp)
            out[f"extract_x{copies}"] = (got["docs_in"] / secs, mib, big.stat().st_size)
        texts = [t for f in sorted((corpus / "quality").glob("*.parquet")) for t in pq.read_table(f, columns=["text"])["text"].to_pylist()]
        many = (texts * (20_000 // max(len(texts), 1) + 1))[:20_000]
        secs, mib, got = alone(score, str(corpus / "quality" / "model.safetensors"), many)
        out["quality"] = (got["docs"] / secs, got["bytes"] / secs, mib)
        secs, mib, got = alone(tokenize, str(gpt2), texts * 10)
        out["tokenize"] = (got["tokens"] / secs, got["bytes"] / got["tokens"], mib)
        secs, mib, got = alone(write_shards, str(Path(tmp) / "shards"), 50_000, 1_000)
        out["shards"] = (got["tokens"] / secs, mib)
    return out


def parse_dedup(log: Path) -> list[dict]:
    """The --docs runs of a bench_dedup log: documents, wall seconds, edges, rounds, partitions
    and each stage's largest task's memory (MiB above the process)."""
    runs, cur = [], None
    for line in log.read_text().splitlines():
        if m := re.match(r"== scale: (\d+) documents", line):
            cur = {"docs": int(m[1]), "peak_mib": {}}
            runs.append(cur)
        elif cur is not None and (m := re.search(r"plan: (\d+) partitions.*?(\d+) exact and (\d+) near duplicates, "
                                                 r"(\d+) clusters \(largest (\d+)\).*?-> (\d+) edges.*?"
                                                 r"components: (\d+) partitions, (\d+) rounds", line)):
            keys = ("partitions", "exact", "near", "clusters", "largest_cluster", "edges", "component_partitions",
                    "rounds")
            cur.update(dict(zip(keys, map(int, m.groups()))))
        elif cur is not None and line.strip().startswith("wall seconds:"):
            cur["stages"] = {k: float(v) for k, v in re.findall(r"(\w[\w-]*) ([\d.]+)(?=[,;])", line)}
            cur["wall"] = float(re.search(r"total ([\d.]+)", line)[1])
        elif cur is not None and (m := re.match(r"\s+(\S[\w :-]*?)\s+\w+\s+(\d+): +([\d.]+) s, \+ *(\d+) MiB", line)):
            cur["peak_mib"][m[1].strip()] = int(m[4])
    return [r for r in runs if "wall" in r]


def fit(xs, ys) -> tuple[float, float]:
    """(c, b) of y = c x^b, least squares in log-log."""
    b, logc = np.polyfit(np.log(xs), np.log(ys), 1)
    return math.exp(logc), b


def signatures_rate(log: Path) -> float:
    """Our signatures' documents per second on one core (wordhash), from a bench_dedup log."""
    return float(re.search(r"ours, hashfunc=wordhash\s+(\d+) docs/s", log.read_text())[1])


def stage_rows(corpus: Path, rates: dict, sig_rate: float, dedup_runs: list[dict]) -> tuple[list[tuple], dict]:
    """Per stage at one snapshot: (stage, tasks, core-hours, peak MiB a task, bytes written, binds)."""
    st = json.loads((corpus / "stats.json").read_text())["stages"]
    pages = SNAPSHOT["pages"]
    share = lambda stage, key="docs_out": st[stage][key] / st["extract"]["docs_in"]  # noqa: E731
    filtered, deduped = pages * share("filter"), pages * share("dedup")
    text = pages * share("dedup", "bytes_out")  # the crawl's kept text, bytes
    ex_rate, ex_mib, _ = rates["extract_x50"]
    q_docs, q_bytes, q_mib = rates["quality"]
    tok_rate, bytes_per_token, tok_mib = rates["tokenize"]
    tokens = text / bytes_per_token
    shard_rate, shard_mib = rates["shards"]
    core_s_extract = pages / ex_rate
    net = SNAPSHOT["warc_bytes"] / core_s_extract  # bytes/s of WARC each busy core reads
    fits = stage_fits(dedup_runs)
    dedup_core_s = sum(2 * c * filtered ** b for c, b in fits.values())  # 2 workers: core-seconds
    fuzzy_bytes = filtered * (9 * 48 + 4 * 128 + 160)  # band records, signatures, exact records
    edges_per_doc = dedup_runs[-1]["edges"] / dedup_runs[-1]["docs"]
    parts = math.ceil(filtered * 9 * 48 / (BUDGET_MIB * 2**20))
    rows = [
        ("extract + language + filters", f"{SNAPSHOT['files']:,} (one a WARC)", core_s_extract / 3600,
         f"{ex_mib:.0f}", f"{pages * share('extract', 'bytes_out') / 1e12:.1f} TB text",
         f"network: {net / 1e6:.0f} MB/s of WARC a core = {net * NODE_CORES * 8 / 1e9:.0f} Gbit/s a "
         f"{NODE_CORES}-core node"),
        ("quality (scoring)", f"{SNAPSHOT['files']:,}", filtered / q_docs / 3600, f"{q_mib:.0f}",
         f"{pages * share('quality', 'bytes_out') / 1e12:.1f} TB", "CPU"),
        ("dedup (all steps)", f"{SNAPSHOT['files']:,} per-file; {parts:,} partitions", dedup_core_s / 3600,
         f"{BUDGET_MIB} + {WORKER_BASE_MIB} (budget + worker)",
         f"{fuzzy_bytes / 1e12:.1f} TB work files + {filtered * edges_per_doc * 128 / 1e12:.2f} TB edges",
         "CPU (signatures); the shuffle's disk and object store"),
        ("  of which signatures", "per file", filtered / sig_rate / 3600, "-", f"{filtered * 4 * 128 / 1e12:.2f} TB", "CPU"),
        ("decontam", "per documents file", text / QUOTED["decontam_bytes_per_core_s"] / 3600, "index + batch",
         f"{text / 1e12:.1f} TB", "CPU"),
        ("tokenize (GPT-2 BPE)", "per documents file", tokens / tok_rate / 3600, f"{tok_mib:.0f}",
         f"{tokens * 2 / 1e12:.2f} TB uint16", "CPU"),
        ("shards (mixture)", "1 (the driver)", tokens / shard_rate / 3600, f"{50 * deduped / 2**20:,.0f} (~50 B a document)",
         f"{tokens * 2 / 1e12:.2f} TB", f"one process: {tokens / shard_rate / 3600:.1f} h wall"),
    ]
    return rows, {"filtered": filtered, "deduped": deduped, "text": text, "tokens": tokens, "fits": fits,
                  "partitions": parts, "edges_per_doc": edges_per_doc}


def stage_fits(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Each dedup stage's wall seconds fitted as c x N^b over the runs."""
    n = np.array([r["docs"] for r in runs], dtype=float)
    return {stage: fit(n, np.maximum([r["stages"][stage] for r in runs], 0.05)) for stage in runs[-1]["stages"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="output_dir of `python -m dataprep` on the sample")
    ap.add_argument("--dedup-log", type=Path, required=True)
    ap.add_argument("--shared-data", type=Path,
                    default=Path(os.environ.get("CCP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    args = ap.parse_args()
    rates = measure(args.corpus, args.shared_data / "warc" / "cc-main-2020-34_resiliparse_warcfile.warc.gz",
                    args.shared_data / "tokenizer" / "gpt2" / "tokenizer.json")
    sig_rate = signatures_rate(args.dedup_log)
    runs = parse_dedup(args.dedup_log)
    print("measured here, one core each (CPU time; memory: peak above the process's size after its imports)")
    for copies in (1, 10, 50):
        r, mib, size = rates[f"extract_x{copies}"]
        print(f"  extract task, one WARC of {size / 1e6:5.1f} MB ({copies:>2}x the sample's members): {r:6.0f} records/s, +{mib:.0f} MiB")
    q_docs, q_bytes, q_mib = rates["quality"]
    print(f"  quality scoring: {q_docs:,.0f} documents/s ({q_bytes / 1e6:.1f} MB/s), +{q_mib:.0f} MiB")
    t_rate, bpt, t_mib = rates["tokenize"]
    print(f"  GPT-2 BPE, one thread: {t_rate:,.0f} tokens/s ({bpt:.2f} bytes a token), +{t_mib:.0f} MiB")
    print(f"  shard writer: {rates['shards'][0]:,.0f} tokens/s, +{rates['shards'][1]:.0f} MiB")
    print(f"  signatures (bench_dedup log): {sig_rate:,.0f} documents/s")

    rows, at = stage_rows(args.corpus, rates, sig_rate, runs)
    print(f"\none snapshot: {SNAPSHOT['warc_bytes'] / 1e12:.0f} TB of WARC, {SNAPSHOT['pages']:.0e} pages in "
          f"{SNAPSHOT['files']:,} files; the sample's funnel gives {at['filtered']:.2e} documents after the filters, "
          f"{at['deduped']:.2e} after dedup, {at['text'] / 1e12:.2f} TB of text, {at['tokens']:.2e} GPT-2 tokens")
    print("\n| stage | tasks | core-hours | peak MiB a task | written | binds |\n|---|---|---|---|---|---|")
    for name, tasks, hours, mib, written, binds in rows:
        print(f"| {name} | {tasks} | {hours:,.0f} | {mib} | {written} | {binds} |")

    print(f"\ndedup, measured ({args.dedup_log}): N documents, wall s on 2 workers, edges, component rounds, "
          f"partitions (LSH / components), largest cluster, largest task")
    for r in runs:
        print(f"  {r['docs']:>9,}  {r['wall']:7.1f} s  edges {r['edges']:>9,}  rounds {r['rounds']}  "
              f"partitions {r['partitions']}/{r['component_partitions']}  largest cluster {r['largest_cluster']}  "
              f"largest task +{max(r['peak_mib'].values())} MiB ({max(r['peak_mib'], key=r['peak_mib'].get)})")
    if len(runs) >= 2:
        n = np.array([r["docs"] for r in runs], dtype=float)
        for label, ys in (("wall seconds", [r["wall"] for r in runs]), ("edges", [r["edges"] for r in runs]),
                          ("largest cluster", [r["largest_cluster"] for r in runs]),
                          ("rounds", [r["rounds"] for r in runs]),
                          ("largest task MiB", [max(r["peak_mib"].values()) for r in runs])):
            c, b = fit(n, np.maximum(ys, 1))
            print(f"  fit {label:17} = {c:.3g} x N^{b:.3f}; at {at['filtered']:.2e} documents: {c * at['filtered'] ** b:,.3g}")
        print("  per stage, wall seconds on 2 workers = c x N^b; core-hours at the snapshot (2 x the fit):")
        for stage, (c, b) in at["fits"].items():
            print(f"    {stage:13} b = {b:5.2f}  {2 * c * at['filtered'] ** b / 3600:12,.0f} core-hours")
        sig_reads = at["partitions"] * at["filtered"] * 4 * 128
        print(f"  LSH verification reads about every signature once per partition: {at['partitions']} x "
              f"{at['filtered']:.2e} x 512 B = {sig_reads / 1e12:,.0f} TB at the snapshot")

    print(f"\ntraining on {GPUS} H200 at {MFU:.0%} MFU ({H200_PEAK / 1e12:.0f} TFLOP/s dense bf16), one epoch of "
          f"{at['tokens']:.2e} tokens, {GLOBAL_BATCH_TOKENS:,} tokens a step; data parallel, "
          f"{GPU_NET_BYTES_S / 1e9:.0f} GB/s a GPU between nodes")
    print("| model | parameters | tokens/s a GPU | epoch | step compute | bf16 gradient traffic a GPU a step "
          "(ZeRO-1/2 / 3) | at the NIC | checkpoint (ZeRO-1/2 / 3) |\n|---|---|---|---|---|---|---|---|")
    for name, params, flops in models():
        per_gpu = MFU * H200_PEAK / flops
        hours = at["tokens"] / (per_gpu * GPUS) / 3600
        step = GLOBAL_BATCH_TOKENS / GPUS / per_gpu
        traffic = {2: 2 * 2 * params, 3: 3 * 2 * params}  # bytes: 2 (ZeRO-1/2) or 3 (ZeRO-3) passes of bf16
        ck = QUOTED["checkpoint_bytes_per_param"]
        print(f"| {name} | {params / 1e9:.2f}B | {per_gpu:,.0f} ({QUOTED['loader_tokens_per_core_s'] / per_gpu:,.0f}x "
              f"less than a loader core) | {hours:,.1f} h | {step * 1e3:.0f} ms | {traffic[2] / 1e9:.1f} / "
              f"{traffic[3] / 1e9:.1f} GB | {traffic[2] / GPU_NET_BYTES_S * 1e3:.0f} / {traffic[3] / GPU_NET_BYTES_S * 1e3:.0f} ms | "
              f"{params * ck[2] / 1e9:.0f} / {params * ck[3] / 1e9:.0f} GB |")


def models() -> list[tuple[str, int, int]]:
    """(name, parameters, training FLOPs a token) of each shipped model size above 100M, GPT-2's vocabulary."""
    import torch
    import yaml
    from pretrain.config import ModelConfig
    from pretrain.model import GPT
    out = []
    for path in sorted(Path(__file__).resolve().parents[1].glob("conf/model/*.yaml")):
        m = yaml.safe_load(path.read_text())["model"]
        with torch.device("meta"):
            g = GPT(ModelConfig(**m, vocab_size=50304))
        if g.num_params() > 1e8:
            out.append((path.stem, g.num_params(), g.flops_per_token()))
    return sorted(out, key=lambda x: x[1])


if __name__ == "__main__":
    main()
