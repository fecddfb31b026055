"""`cluster=local`: cluster.nproc training processes on this machine, via torchrun or the
DeepSpeed launcher."""

from __future__ import annotations

import sys
from pathlib import Path

from launch.plan import LaunchError, LaunchPlan, command_plan, rank_overrides, this_machine_env
from pretrain.comm import free_port
from pretrain.config import PretrainConfig


def command(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> list[str]:
    c = cfg.cluster
    port = str(c.master_port or free_port())
    args = rank_overrides(overrides, run_dir)
    if c.launcher == "torchrun":
        return [sys.executable, "-m", "launch.agent", "--nnodes", "1",
                "--nproc-per-node", str(c.nproc), "--master-addr", c.master_addr,
                "--master-port", port, "-m", "pretrain", *args]
    if c.launcher == "deepspeed":
        # --no_local_rank: Hydra would reject the --local_rank=N argument; ranks come from env.
        return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_accelerators", str(c.nproc),
                "--master_addr", c.master_addr, "--master_port", port, "--no_local_rank",
                "--module", "pretrain", *args]
    raise LaunchError(f"cluster.launcher must be torchrun or deepspeed, not {c.launcher!r}")


def plan(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> LaunchPlan:
    return command_plan(command(cfg, overrides, run_dir), this_machine_env(cfg))
