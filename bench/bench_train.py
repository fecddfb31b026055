"""Training throughput: our trainer against a plain PyTorch loop, and the cost of ZeRO 1/2/3.

    python bench/bench_train.py --manifest outputs/corpus/manifest.json [hydra overrides ...]

1. One CPU rank, in this process: a plain PyTorch loop (the same GPT, batches, AdamW parameter
   groups, warmup-cosine schedule and gradient clipping; no DeepSpeed) and our trainer's step
   (`pretrain.train.train_step` on the DeepSpeed ZeRO-0 engine `pretrain.engine.build_engine`
   makes: exactly what `python -m pretrain` runs per step) take turns step by step, so that
   other load on the machine hits both alike. Median step time (wall and process CPU time:
   on a shared machine the CPU time is the steadier figure) after `--warmup` steps.
2. Two ranks, `python -m launch` with zero=stage0..stage3 taking turns for `--rounds` rounds:
   median tokens/s after the warm-up, best round, ratio to stage 0.

Figures are absolute tokens/s and ratios measured in the same run (the machine may be shared:
rerun before trusting a small difference).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pretrain.config import register

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return OmegaConf.to_object(hydra_compose("pretrain", overrides))


def one_rank(cfg, steps: int, warmup: int) -> tuple[list[float], list[float], float]:
    """Seconds per step of the plain loop and of our trainer's step, taking turns step by step
    in this process (so load from elsewhere on the machine hits both alike); and the largest
    loss difference between them (they compute the same thing)."""
    from dataclasses import replace

    import torch

    from pretrain import engine as deepspeed_engine
    from pretrain.data import BatchLayout, Splits, TokenStream
    from pretrain.loader import MicroBatch
    from pretrain.model import GPT
    from pretrain.train import resolve_model, train_step

    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    cfg = replace(cfg, zero=replace(cfg.zero, stage=0))
    deepspeed_engine.init_distributed(cfg)
    stream = TokenStream(cfg.data.manifest)
    mcfg = resolve_model(cfg, stream.vocab_size)
    data = Splits.of(stream, mcfg.seq_len, cfg.data.seed, cfg.data.val_fraction).train
    layout = BatchLayout(cfg.train.micro_batch_size, cfg.train.grad_accum_steps, 1)
    o = cfg.optim

    torch.manual_seed(cfg.train.seed)
    model = GPT(mcfg)
    opt = torch.optim.AdamW(deepspeed_engine.param_groups(model, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, deepspeed_engine.lr_lambda(cfg))
    torch.manual_seed(cfg.train.seed)
    engine = deepspeed_engine.build_engine(GPT(mcfg), cfg, 1)

    def plain_step(step: int) -> float:
        for micro in range(layout.grad_accum_steps):
            x, y = data.batch(layout.indices(step, micro, 0))
            _, loss = model(x, y)
            (loss / layout.grad_accum_steps).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def batches(step: int):
        for micro in range(layout.grad_accum_steps):
            indices = layout.indices(step, micro, 0)
            yield MicroBatch(step, micro, indices, *data.batch(indices))

    plain, ours, diff = [], [], 0.0
    for step in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        a = plain_step(step)
        t1, c1 = time.perf_counter(), time.process_time()
        loss, _ = train_step(engine, batches(step), layout.grad_accum_steps, torch.device("cpu"))
        b = float(loss)  # the plain loop reads its loss too
        t2, c2 = time.perf_counter(), time.process_time()
        plain.append((t1 - t0, c1 - c0))
        ours.append((t2 - t1, c2 - c1))
        diff = max(diff, abs(a - b))
    deepspeed_engine.shutdown()
    return plain[warmup:], ours[warmup:], diff


def zero_stages(manifest: str, overrides: list[str], steps: int, warmup: int, tmp: Path,
                rounds: int) -> dict[int, list[float]]:
    """Median tokens/s of a 2-rank run for each ZeRO stage, stages taking turns, per round."""
    out: dict[int, list[float]] = {0: [], 1: [], 2: [], 3: []}
    for r in range(rounds):
        for stage in out:
            run_dir = tmp / f"zero{stage}_{r}"
            cmd = [sys.executable, "-m", "launch", f"data.manifest={manifest}", f"run_dir={run_dir}",
                   f"zero=stage{stage}", f"train.max_steps={steps}", "checkpoint.every_steps=0",
                   "checkpoint.at_end=false", "resume=never", "cluster.nproc=2", *overrides]
            subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
            records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
            out[stage].append(statistics.median(r["tokens_per_s"] for r in records[warmup:steps]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(REPO / "outputs/corpus/manifest.json"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--rounds", type=int, default=2, help="turns of the four ZeRO stages")
    parser.add_argument("--skip-zero", action="store_true", help="only the 1-rank comparison")
    parser.add_argument("overrides", nargs="*", help="hydra overrides for both, e.g. model.d_model=256")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    torch.set_num_threads(args.threads)
    overrides = ["train.micro_batch_size=8", *args.overrides]
    cfg = compose([f"data.manifest={args.manifest}", *overrides])
    tokens = cfg.train.micro_batch_size * cfg.train.grad_accum_steps * cfg.model.seq_len
    print(f"model {cfg.model.style} L{cfg.model.n_layer} d{cfg.model.d_model} T{cfg.model.seq_len}, "
          f"batch {tokens} tokens, {args.steps} steps (median of the last {args.steps - args.warmup}), "
          f"{args.threads} thread(s) per rank", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain, ours, diff = one_rank(cfg, args.steps, args.warmup)
        p, o = (statistics.median(t for t, _ in x) for x in (plain, ours))
        pc, oc = (statistics.median(c for _, c in x) for x in (plain, ours))
        print("\n1 CPU rank (steps alternate)  tokens/s   ms/step   CPU ms/step")
        print(f"plain PyTorch loop (AdamW)   {tokens / p:10.0f} {p * 1e3:9.1f} {pc * 1e3:11.1f}")
        print(f"ours (DeepSpeed ZeRO-0)      {tokens / o:10.0f} {o * 1e3:9.1f} {oc * 1e3:11.1f}"
              f"   (losses differ by <= {diff:.1e})")
        print(f"ratio ours / plain           {p / o:10.3f} {'':9} {pc / oc:11.3f}   (target >= 0.95)", flush=True)
        if args.skip_zero:
            return
        # The ranks inherit OMP_NUM_THREADS from this process (the launcher keeps a set value).
        stages = zero_stages(args.manifest, overrides, args.steps, args.warmup, tmp, args.rounds)
        best = {stage: max(v) for stage, v in stages.items()}
        print(f"\n2 CPU ranks, best of {args.rounds} rounds  tokens/s   vs ZeRO-0   (each round)")
        for stage, tps in best.items():
            print(f"ZeRO-{stage}                     {tps:10.0f} {tps / best[0]:10.3f}   "
                  + ", ".join(f"{t:.0f}" for t in stages[stage]))


if __name__ == "__main__":
    main()
