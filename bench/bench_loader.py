"""The training loader alone: tokens/s on one CPU core, and startup time and memory at 10^9 windows.

    python bench/bench_loader.py                  # ~1 minute
    python bench/bench_loader.py --tokens 256e6 --micro-batch 16

1. Throughput. A synthetic shard set (`--tokens` random uint16 tokens, GPT-2's vocabulary) is
   written to a temporary folder and read back through memory maps, the page cache warm. The
   process is pinned to one core (its threads included). Ours: `pretrain.loader.Prefetcher`,
   the loader `python -m pretrain` runs (a background thread reading the micro batches ahead,
   batches of `--micro-batch` x (`--seq-len` + 1) tokens). Baseline, in the same run: the
   loader this project had before, in this file: a materialized permutation of the windows,
   one sample read and stacked at a time in the training thread. Both read the same windows
   in the same number; the figure is tokens delivered per wall second.
2. The need it is measured against: a 1.3b model (`model=1.3b`, its parameter count N from the
   config on the meta device) on one H200 at 50% MFU consumes 0.5 x 989e12 / 6N tokens/s (6N
   FLOPs per token, the dense bf16 peak): about 63k tokens/s.
3. Scale. In a fresh process each, the split and epoch orders of a simulated manifest of
   10^7, 10^8 and 10^9 windows of 2,048 tokens are built and the windows of the first batch
   computed (no tokens: the index math alone): seconds, and the process's peak RSS (VmHWM,
   torch and numpy imported). The baseline's materialized permutations at 10^7 and 10^8.

The last line reads
`loader: <T> tokens/s on one core = <R>x a 1.3b H200's need; 1e9 windows: startup <S> s, peak RSS <M> MB`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

H200_BF16_PEAK = 989e12


class OldLoader:
    """The loader as it was: every window's position in one materialized permutation, sorted per
    split, each epoch another permutation; samples read and stacked one by one."""

    def __init__(self, stream, seq_len: int, seed: int, val_fraction: float = 0.05):
        self.stream, self.seq_len, self.seed = stream, seq_len, seed
        n_windows = (stream.num_tokens - 1) // seq_len
        n_val = min(n_windows - 1, max(1, round(n_windows * val_fraction)))
        perm = np.random.default_rng([seed, 0]).permutation(n_windows)
        self.windows = np.sort(perm[n_val:])
        self._order = np.random.default_rng([seed, 1, 0]).permutation(len(self.windows))

    def batch(self, indices):
        import torch

        rows = [self.stream.read(int(self.windows[self._order[i]]) * self.seq_len, self.seq_len + 1)
                for i in indices]
        xs, ys = zip(*((r[:-1], r[1:]) for r in rows))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def tokens_needed_1p3b() -> float:
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pretrain.config import register
    from pretrain.model import GPT

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = OmegaConf.to_object(compose("pretrain", ["model=1.3b", "model.vocab_size=50257"]))
    with torch.device("meta"):
        n = GPT(cfg.model).num_params()
    return 0.5 * H200_BF16_PEAK / (6 * n), n


def write_corpus(folder: Path, tokens: int) -> Path:
    from dataprep.shards import ShardWriter

    rng = np.random.default_rng(0)
    with ShardWriter(folder, "shard", np.uint16, shard_tokens=1 << 26) as w:
        left = tokens
        while left > 0:
            n = min(left, int(rng.integers(1 << 10, 1 << 16)))
            w.add_document(rng.integers(0, 50257, size=n, dtype=np.uint16))
            left -= n
    path = folder / "manifest.json"
    path.write_text(json.dumps({"tokenizer": {"vocab_size": 50257}, "shards": w.shards}))
    return path


def throughput(manifest: Path, seq_len: int, micro: int, batches: int, rounds: int) -> tuple[float, float]:
    """(ours, baseline) tokens/s, best of `rounds`, taking turns."""
    import torch

    from pretrain.data import BatchLayout, PackedSamples, TokenStream
    from pretrain.loader import Prefetcher

    stream = TokenStream(manifest)
    ours_samples = PackedSamples(stream, seq_len, seed=1)
    old = OldLoader(stream, seq_len, seed=1)
    layout = BatchLayout(micro, 1, 1)
    per_batch = micro * seq_len
    best = [0.0, 0.0]
    for r in range(rounds):
        start = r * batches
        t0 = time.perf_counter()
        with Prefetcher(ours_samples, layout, 0, start, start + batches, torch.device("cpu")) as p:
            n = sum(1 for _ in p)
        best[0] = max(best[0], n * per_batch / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for step in range(start, start + batches):
            old.batch(layout.indices(step, 0, 0))
        best[1] = max(best[1], batches * per_batch / (time.perf_counter() - t0))
    return best[0], best[1]


SCALE_PROBE = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
import numpy as np, torch
t0 = time.perf_counter()
class Stream:  # a manifest's size without its tokens
    num_tokens = {windows} * {seq_len} + 1
    manifest_path = "simulated"
if {old}:
    sys.path.insert(0, {bench!r})
    from bench_loader import OldLoader
    loader = OldLoader(Stream(), {seq_len}, seed=1)
    first = [int(loader.windows[loader._order[i]]) for i in range(8)]
else:
    from pretrain.data import PackedSamples
    samples = PackedSamples(Stream(), {seq_len}, seed=1)
    first = samples.windows(np.arange(8)).tolist()
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_mb": peak}}))
"""


def scale(windows: int, seq_len: int, old: bool) -> dict:
    code = SCALE_PROBE.format(repo=str(REPO), bench=str(REPO / "bench"), windows=windows, seq_len=seq_len, old=old)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=float, default=64e6, help="tokens in the synthetic shards")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=400, help="micro batches per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-old-scale", action="store_true", help="skip the baseline's 10^8 windows (1.6 GB)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for every thread
    import torch

    torch.set_num_threads(1)
    need, n_params = tokens_needed_1p3b()
    print(f"need: 1.3b ({n_params / 1e9:.3f}B parameters) on one H200 at 50% MFU = 0.5 x 989 TFLOP/s / 6N "
          f"= {need:.0f} tokens/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_corpus(Path(tmp), int(args.tokens))
        ours, old = throughput(manifest, args.seq_len, args.micro_batch, args.batches, args.rounds)
    print(f"\nthroughput, one core, micro batch {args.micro_batch} x {args.seq_len + 1} tokens, "
          f"{int(args.tokens)} tokens of shards (best of {args.rounds} x {args.batches} batches)")
    print(f"{'':38} {'tokens/s':>12} {'x need':>8}")
    print(f"{'ours (prefetching, per-index order)':38} {ours:12.0f} {ours / need:8.0f}")
    print(f"{'baseline (materialized permutation)':38} {old:12.0f} {old / need:8.0f}")
    print(f"{'ratio ours / baseline':38} {ours / old:12.2f}", flush=True)

    print(f"\nscale: build the orders and the first batch's windows, fresh process (seq_len {args.seq_len})")
    print(f"{'windows':>8} {'ours s':>8} {'ours MB':>8} {'baseline s':>11} {'baseline MB':>12}")
    results = {}
    for exp in (7, 8, 9):
        mine = scale(10**exp, args.seq_len, old=False)
        results[exp] = mine
        base = scale(10**exp, args.seq_len, old=True) if exp == 7 or (exp == 8 and not args.skip_old_scale) else None
        print(f"{'1e%d' % exp:>8} {mine['seconds']:8.3f} {mine['peak_mb']:8.0f} "
              + (f"{base['seconds']:11.2f} {base['peak_mb']:12.0f}" if base else f"{'(8 GB: not run)':>24}"),
              flush=True)
    big = results[9]
    print(f"loader: {ours:.0f} tokens/s on one core = {ours / need:.0f}x a 1.3b H200's need; 1e9 windows: "
          f"startup {big['seconds']:.3f} s, peak RSS {big['peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
