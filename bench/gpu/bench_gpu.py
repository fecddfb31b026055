"""Tokens/s and MFU of our trainer on one GPU, for GPT-3 125M and 1.3B in bf16.

    python bench/gpu/bench_gpu.py                       # both sizes, ~5 minutes on one H200
    python bench/gpu/bench_gpu.py --models 1.3b --micro-batch 1.3b=16 -- train.grad_accum_steps=2

Needs no corpus: it writes a manifest of random token shards (vocabulary 50257, GPT-2's), so
the loss stays at ln(50257) but every step costs what a real one does. Each size runs
`python -m pretrain` (one rank, DeepSpeed, `train.precision=bf16`) and reads its
metrics.jsonl: median tokens/s and MFU after the warm-up steps. MFU uses 6N + 12·L·d·T FLOPs
per token over the GPU's dense bf16 peak (pretrain/metrics.py: 989 TFLOP/s for H100/H200 SXM,
312 for A100; `--peak-tflops` for others). Target on one H200: MFU >= 50% for 1.3b.
Results are printed and written to $OUT/bench_gpu.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

DEFAULT_MICRO = {"125m": 16, "350m": 16, "760m": 8, "1.3b": 8, "2.7b": 4, "6.7b": 2}


def random_corpus(folder: Path, tokens: int, vocab: int = 50257) -> Path:
    from dataprep.shards import ShardWriter

    rng = np.random.default_rng(0)
    with ShardWriter(folder, "shard", np.uint16, shard_tokens=1 << 26) as w:
        left = tokens
        while left > 0:
            n = min(left, 1 << 20)
            w.add_document(rng.integers(0, vocab, size=n, dtype=np.uint16))
            left -= n
    path = folder / "manifest.json"
    path.write_text(json.dumps({"tokenizer": {"vocab_size": vocab, "path": None, "eod_id": None},
                                "shards": w.shards}))
    return path


def run_size(name: str, micro: int, manifest: Path, steps: int, warmup: int, run_dir: Path,
             extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "pretrain", f"model={name}", f"data.manifest={manifest}",
           f"run_dir={run_dir}", "resume=never", "train.precision=bf16", f"train.max_steps={steps}",
           f"train.micro_batch_size={micro}", "checkpoint.every_steps=0", "checkpoint.at_end=false",
           "data.val_fraction=0.001", "train.eval_batches=1", "train.progress_bar=false",
           "metrics.tensorboard=false", *extra]
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"model": name, "error": (proc.stdout + proc.stderr)[-3000:]}
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = records[warmup:steps]
    mfu = [r["mfu"] for r in timed if r.get("mfu") is not None]
    return {
        "model": name,
        "micro_batch": micro,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
        "mfu": statistics.median(mfu) if mfu else None,
        "max_allocated_gb": max(r.get("cuda_max_allocated_gb", 0) or 0 for r in records),
        "last_loss": records[-1]["loss"],
        "seconds": time.time() - started,
        "overrides": cmd[3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["125m", "1.3b"])
    parser.add_argument("--micro-batch", nargs="*", default=[], help="NAME=N, e.g. 1.3b=16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not known")
    parser.add_argument("extra", nargs="*", help="more hydra overrides (after --)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device visible")
    micro = dict(DEFAULT_MICRO, **{k: int(v) for k, v in (m.split("=") for m in args.micro_batch)})
    extra = list(args.extra) + ([f"metrics.peak_tflops={args.peak_tflops}"] if args.peak_tflops else [])
    os.environ.setdefault("OMP_NUM_THREADS", "8")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        need = max(micro[m] for m in args.models) * 2048 * (args.steps + 2) + 2_000_000
        manifest = random_corpus(tmp / "corpus", need)
        for name in args.models:
            r = run_size(name, micro[name], manifest, args.steps, args.warmup, tmp / name, extra)
            results.append(r)
            if "error" in r:
                print(f"{name}: FAILED\n{r['error']}", flush=True)
            else:
                mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
                print(f"{name:>6}  micro batch {r['micro_batch']:>3} x 2048  {r['tokens_per_s']:>10.0f} tokens/s  "
                      f"MFU {mfu:>6}  max allocated {r['max_allocated_gb']:.1f} GB  ({r['seconds']:.0f} s)",
                      flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_gpu.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
