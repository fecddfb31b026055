"""`cluster=local`: cluster.nproc training processes on this machine, via torchrun or the
DeepSpeed launcher. Commands are argument lists (no shell), so no value can inject a command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from launch.ports import free_port
from pretrain.config import PretrainConfig


def command(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> list[str]:
    c = cfg.cluster
    port = str(c.master_port or free_port())
    # Every rank gets the same, absolute run_dir: one run, one folder.
    args = [o for o in overrides if not o.lstrip("+~").startswith("run_dir=")] + [f"run_dir={run_dir}"]
    if c.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                "--nproc_per_node", str(c.nproc), "--master_addr", c.master_addr,
                "--master_port", port, "-m", "pretrain", *args]
    if c.launcher == "deepspeed":
        # --no_local_rank: Hydra would reject the --local_rank=N argument; ranks come from env.
        return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_accelerators", str(c.nproc),
                "--master_addr", c.master_addr, "--master_port", port, "--no_local_rank",
                "--module", "pretrain", *args]
    raise ValueError(f"cluster.launcher must be torchrun or deepspeed, not {c.launcher!r}")


def environment(cfg: PretrainConfig) -> dict[str, str]:
    env = dict(os.environ)
    if cfg.cluster.accelerator:
        env["DS_ACCELERATOR"] = cfg.cluster.accelerator
    elif not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    # Share the cores between the ranks instead of torchrun's default of one thread each.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, cfg.cluster.nproc))))
    return env
