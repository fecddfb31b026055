"""The device check for one GPU: throughput and MFU per model size, the attention kernel that runs,
a stop and resume compared with the straight run, and the loader bench. `bench/gpu/run.sh` runs
it (offline, under 8 minutes on one H200); `--smoke` runs the same steps on a CPU with the tiny
model, to check the script itself.

    python bench/gpu/bench_gpu.py                          # all parts, defaults below
    python bench/gpu/bench_gpu.py --parts sizes --models 1.3b --micro-batch 1.3b=16
    python bench/gpu/bench_gpu.py --smoke                  # on a CPU, ~2 minutes

Needs no corpus: it writes a manifest of random token shards (vocabulary 50257, GPT-2's), so
the loss stays near ln(50257) but every step costs what a real one does. Each run is
`python -m pretrain` (one rank, DeepSpeed ZeRO-2, bf16, `train.compile=true` unless
`--eager`), read back from its metrics.jsonl: tokens/s and MFU are the medians of the logged
intervals after `--warmup` steps (each row is the mean over the steps since the last one).
MFU = 6N + 12·L·d·T FLOPs per token over the GPU's dense bf16 peak (pretrain/metrics.py: 989
TFLOP/s for H100/H200 SXM). Target on one H200: MFU >= 50% for 1.3b.

Results are printed as a table and written to $OUT/bench_gpu.json when OUT is set.
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

DEFAULT_MICRO = {"tiny": 8, "125m": 16, "350m": 16, "760m": 8, "1.3b": 8, "2.7b": 4, "6.7b": 2}


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


def pretrain(run_dir: Path, overrides: list[str], log: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pretrain", f"run_dir={run_dir}", *overrides]
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, text=True)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]


def run_size(name: str, micro: int, base: list[str], steps: int, warmup: int, run_dir: Path, log: Path,
             extra: list[str]) -> dict:
    overrides = [f"model={name}", "resume=never", f"train.max_steps={steps}", f"train.micro_batch_size={micro}",
                 "checkpoint.every_steps=0", "checkpoint.at_end=false", "data.val_fraction=0.001",
                 "train.eval_batches=1", "train.log_every_steps=10", *base, *extra]
    started = time.time()
    proc = pretrain(run_dir, overrides, log)
    if proc.returncode != 0 or not (run_dir / "metrics.jsonl").exists():
        return {"model": name, "error": f"exit {proc.returncode}; see {log}"}
    records = rows(run_dir)
    timed = [r for r in records if r["step"] > warmup] or records[-1:]
    mfu = [r["mfu"] for r in timed if r.get("mfu") is not None]
    return {
        "model": name, "micro_batch": micro,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
        "mfu": statistics.median(mfu) if mfu else None,
        "max_allocated_gb": max(r.get("cuda_max_allocated_gb", 0) or 0 for r in records),
        "last_loss": records[-1]["loss"], "seconds": time.time() - started, "overrides": overrides,
    }


def attention_kernel(smoke: bool) -> dict:
    """Which kernel runs the causal attention of a 1.3b block (bf16, T 2048, 16 heads of 128),
    forward and backward, as the profiler saw it; and whether the flash backend alone runs it."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if smoke:
        return {"kernels": [], "flash_runs": None, "verdict": "skipped (no GPU)"}
    q, k, v = (torch.randn(8, 16, 2048, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if any(s in e.key.lower() for s in ("flash", "fmha", "attention", "cudnn", "efficient"))})
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        flash = True
    except RuntimeError:
        flash = False
    fused = [n for n in names if "flash" in n.lower() or "cudnn" in n.lower() or "fmha" in n.lower()]
    verdict = "flash" if any("flash" in n.lower() for n in names) else ("fused (cuDNN)" if fused else "NOT fused")
    return {"kernels": names, "flash_runs": flash, "verdict": verdict}


def resume_check(base: list[str], model: str, micro: int, steps: int, tmp: Path, log: Path) -> dict:
    """The same run straight, and stopped at half and resumed with the same command: per-step
    losses compared. Two straight runs give the GPU's own run-to-run difference to judge by."""
    common = [f"model={model}", f"train.micro_batch_size={micro}", f"train.max_steps={steps}",
              f"optim.lr_decay_steps={steps}", "train.log_every_steps=1", "data.val_fraction=0.001",
              "train.eval_batches=1", f"checkpoint.every_steps={steps // 2}",
              *[o for o in base if not o.startswith("train.compile=")], "train.compile=false"]  # 4 starts: no compiles
    straight, again, halves = tmp / "straight", tmp / "straight_again", tmp / "halves"
    started = time.time()
    for run_dir in (straight, again):
        pretrain(run_dir, [*common, "resume=never"], log)
    first = pretrain(halves, [*common, f"train.max_steps={steps // 2}", "resume=never"], log)
    second = pretrain(halves, common, log)  # the same command as the straight run: resume=auto
    if first.returncode or second.returncode or not all((d / "metrics.jsonl").exists() for d in (straight, again, halves)):
        return {"error": f"a run failed; see {log}"}
    a, b, c = ({r["step"]: r["loss"] for r in rows(d)} for d in (straight, again, halves))
    resumed = "resumed from" in log.read_text()
    same_steps = sorted(a) == sorted(c) == list(range(1, steps + 1))
    return {
        "steps": steps, "resumed": resumed, "same_steps": same_steps,
        "max_diff_resumed": max(abs(a[s] - c[s]) for s in a) if same_steps else None,
        "max_diff_two_straight_runs": max(abs(a[s] - b[s]) for s in a if s in b),
        "seconds": time.time() - started,
    }


def loader_bench(smoke: bool, log: Path) -> str:
    args = ["--tokens", "8e6", "--batches", "50", "--rounds", "1"] if smoke else ["--rounds", "2"]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_loader.py"), *args, "--skip-old-scale"],
                          cwd=REPO, capture_output=True, text=True)
    log.open("a").write(proc.stdout + proc.stderr)
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if proc.returncode == 0 and lines else f"FAILED (exit {proc.returncode}; see {log})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["sizes", "attention", "resume", "loader"])
    parser.add_argument("--models", nargs="+", default=["1.3b", "125m", "350m"])
    parser.add_argument("--micro-batch", nargs="*", default=[], help="NAME=N, e.g. 1.3b=16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the medians")
    parser.add_argument("--eager", action="store_true", help="train.compile=false")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if not known")
    parser.add_argument("--smoke", action="store_true", help="on a CPU: model=tiny, fp32, no compile")
    parser.add_argument("extra", nargs="*", help="more hydra overrides (after --)")
    args = parser.parse_args()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device visible (--smoke runs the steps on a CPU)")
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="bench_gpu_"))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "bench_gpu.log"
    micro = dict(DEFAULT_MICRO, **{k: int(v) for k, v in (m.split("=") for m in args.micro_batch)})
    models = ["tiny"] if args.smoke else args.models
    base = ["train.progress_bar=false", "metrics.tensorboard=false"]
    base += (["train.precision=fp32", "train.compile=false", "cluster.accelerator=cpu"] if args.smoke else
             ["train.precision=bf16", f"train.compile={str(not args.eager).lower()}"])
    extra = list(args.extra) + ([f"metrics.peak_tflops={args.peak_tflops}"] if args.peak_tflops else [])
    os.environ.setdefault("OMP_NUM_THREADS", "8")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}, torch {torch.__version__}; parts: {' '.join(args.parts)}; log: {log}", flush=True)
    report: dict = {"device": device, "torch": torch.__version__}
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seq = 128 if args.smoke else 2048
        need = max(micro[m] for m in models) * (seq + 1) * (args.steps + 2) + 2_000_000
        # The smoke run's tiny model spends its time in a 50k-row output layer otherwise.
        manifest = random_corpus(tmp / "corpus", need, vocab=4096 if args.smoke else 50257)
        base.append(f"data.manifest={manifest}")
        if "attention" in args.parts:
            report["attention"] = a = attention_kernel(args.smoke)
            print(f"attention: {a['verdict']}; flash backend runs alone: {a['flash_runs']}; kernels: "
                  f"{', '.join(a['kernels']) or '-'}", flush=True)
        if "sizes" in args.parts:
            report["sizes"] = []
            print(f"{'model':>6} {'micro':>5} {'tokens/s':>10} {'MFU':>6} {'max alloc':>9} {'loss':>7} {'seconds':>7}",
                  flush=True)
            for name in models:
                r = run_size(name, micro[name], base, args.steps, args.warmup, tmp / name, log, extra)
                report["sizes"].append(r)
                if "error" in r:
                    print(f"{name:>6} FAILED: {r['error']}", flush=True)
                    continue
                mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
                print(f"{name:>6} {r['micro_batch']:>5} {r['tokens_per_s']:>10.0f} {mfu:>6} "
                      f"{r['max_allocated_gb']:>7.1f}GB {r['last_loss']:>7.3f} {r['seconds']:>7.0f}", flush=True)
        if "resume" in args.parts:
            model = "tiny" if args.smoke else "125m"
            report["resume"] = r = resume_check(base, model, micro[model], 20, tmp / "resume", log)
            if "error" in r:
                print(f"resume ({model}): FAILED: {r['error']}", flush=True)
            else:
                print(f"resume ({model}, {r['steps']} steps, stopped at {r['steps'] // 2}): resumed {r['resumed']}, "
                      f"max |loss diff| resumed vs straight {r['max_diff_resumed']:.2e}, two straight runs "
                      f"{r['max_diff_two_straight_runs']:.2e} ({r['seconds']:.0f} s)", flush=True)
        if "loader" in args.parts:
            report["loader"] = line = loader_bench(args.smoke, log)
            print(line, flush=True)
    report["seconds"] = time.time() - started
    (out / "bench_gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"done in {report['seconds']:.0f} s; {out / 'bench_gpu.json'}", flush=True)


if __name__ == "__main__":
    main()
