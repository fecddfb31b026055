"""What a training run shows and leaves as it goes, besides metrics: the console's progress bar,
run_dir/progress (the step reached, for the launcher), and the debug log of sample indices."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.distributed as dist

from pretrain.config import PretrainConfig


def progress_bar(cfg: PretrainConfig, rank: int, start: int, total: int):
    from tqdm import tqdm

    # disable=None: tqdm shows the bar only when its stream (stderr) is a terminal.
    disable = None if rank == 0 and cfg.train.progress_bar else True
    return tqdm(total=total, initial=start, disable=disable, unit="step", dynamic_ncols=True, leave=True)


def redirect_logging():
    """Log lines printed above the progress bar instead of through it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


class StepFile:
    """run_dir/progress: the last step this run reached, rewritten in place every step (a few
    bytes, no sync), so that a launcher whose ranks died can say how far they got."""

    def __init__(self, run_dir: Path, max_steps: int):
        self.fd = os.open(run_dir / "progress", os.O_WRONLY | os.O_CREAT, 0o644)
        self.max_steps = max_steps

    def write(self, step: int) -> None:
        os.pwrite(self.fd, f"{step:>12} {self.max_steps:>12}\n".encode(), 0)

    def close(self) -> None:
        os.close(self.fd)


class SampleLog:
    """debug.record_samples: the global sample indices each rank trained on, one line per step
    in run_dir/samples/rank_R.jsonl (steps after the checkpoint resumed from are dropped)."""

    def __init__(self, run_dir: Path, rank: int, start_step: int):
        folder = run_dir / "samples"
        if rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
            for path in folder.glob("rank_*.jsonl"):
                kept = [l for l in path.read_text().splitlines() if l and json.loads(l)["step"] <= start_step]
                path.write_text("".join(l + "\n" for l in kept))
        if dist.is_initialized():
            dist.barrier()
        self.path, self.rank = folder / f"rank_{rank}.jsonl", rank

    def write(self, step: int, world: int, indices: list[int]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "rank": self.rank, "world_size": world,
                                "indices": [int(i) for i in indices]}) + "\n")
