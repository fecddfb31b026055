"""Checkpoint bytes per parameter and save time, per ZeRO stage, for the sizing in docs/scale.md.

    python bench/bench_checkpoint.py --manifest outputs/corpus/manifest.json [--models tiny 125m]

For each model and ZeRO stage 1-3: a 2-rank bf16 run of one step (`python -m launch`, CPU
ranks) that saves a checkpoint; read back from its log line `checkpoint PATH (S s, M MB)`.
Baseline, in the same run: `torch.save` of the same model's bf16 weights plus an fp32 AdamW
state (master weights, exp_avg, exp_avg_sq) in one process, the 14 bytes per parameter a mixed
precision checkpoint must hold at least. Printed: MB, bytes per parameter and seconds for both.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def params(model: str, vocab: int) -> int:
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pretrain.config import register
    from pretrain.model import GPT

    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = OmegaConf.to_object(compose("pretrain", [f"model={model}", f"model.vocab_size={vocab}"]))
    with torch.device("meta"):
        return GPT(cfg.model).num_params(exclude_positions=False)


def ours(manifest: str, model: str, stage: int, tmp: Path, seq_len: int) -> tuple[float, float]:
    run_dir = tmp / f"{model}_z{stage}"
    cmd = [sys.executable, "-m", "launch", f"data.manifest={manifest}", f"run_dir={run_dir}", f"model={model}",
           f"model.seq_len={seq_len}", f"zero=stage{stage}", "train.precision=bf16", "train.max_steps=1",
           "train.micro_batch_size=1", "checkpoint.every_steps=1", "resume=never", "train.progress_bar=false"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    m = re.search(r"checkpoint \S+ \(([\d.]+) s, ([\d.]+) MB\)", out)
    return float(m.group(2)), float(m.group(1))


def baseline(model: str, vocab: int, tmp: Path) -> tuple[float, float]:
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pretrain.model import GPT

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = OmegaConf.to_object(compose("pretrain", [f"model={model}", f"model.vocab_size={vocab}"]))
    net = GPT(cfg.model)
    state = {"model": {k: v.to(torch.bfloat16) for k, v in net.state_dict().items()},
             "master": {k: v.float() for k, v in net.state_dict().items()},
             "exp_avg": {k: torch.zeros_like(v, dtype=torch.float32) for k, v in net.state_dict().items()},
             "exp_avg_sq": {k: torch.zeros_like(v, dtype=torch.float32) for k, v in net.state_dict().items()}}
    path = tmp / f"{model}_baseline.pt"
    t0 = time.perf_counter()
    torch.save(state, path)
    return path.stat().st_size / 1e6, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(REPO / "outputs/corpus/manifest.json"))
    parser.add_argument("--models", nargs="+", default=["tiny", "125m"])
    parser.add_argument("--seq-len", type=int, default=256, help="the step's length (no effect on the checkpoint)")
    args = parser.parse_args()
    print(f"{'model':>6} {'params':>12} {'':>10} {'MB':>9} {'B/param':>8} {'save s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vocab = json.loads(Path(args.manifest).read_text())["tokenizer"]["vocab_size"]
        for model in args.models:
            n = params(model, vocab)
            mb, s = baseline(model, vocab, tmp)
            print(f"{model:>6} {n:>12} {'torch.save':>10} {mb:9.1f} {mb * 1e6 / n:8.2f} {s:7.2f}", flush=True)
            for stage in (1, 2, 3):
                mb, s = ours(args.manifest, model, stage, tmp, args.seq_len)
                print(f"{model:>6} {n:>12} {'ZeRO-%d' % stage:>10} {mb:9.1f} {mb * 1e6 / n:8.2f} {s:7.2f}", flush=True)


if __name__ == "__main__":
    main()
