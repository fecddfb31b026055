"""`cluster=torchrun`: this node's torchrun agent in a multi-node job; run it on every node.

The agents meet at a c10d rendezvous (master_addr:master_port) for cluster.nnodes nodes, or
MIN:MAX for an elastic job. A failed worker makes the agents restart the whole worker group
(up to cluster.max_restarts times), and every rank resumes from the latest complete checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.plan import DEFAULT_PORT, LaunchPlan, command_plan, rank_overrides, this_machine_env
from pretrain.config import PretrainConfig

# By default the c10d rendezvous hands every restart the same TCPStore, still holding the last
# attempt's keys: restarted workers read their dead peers' addresses and fail to connect
# (gloo connectFullMesh refused). A fresh store per attempt.
AGENT_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def command(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> list[str]:
    c = cfg.cluster
    cmd = [sys.executable, "-m", "launch.agent", "--nnodes", c.nnodes,
           "--nproc-per-node", str(c.nproc), "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"{c.master_addr}:{c.master_port or DEFAULT_PORT}",
           "--rdzv-id", c.rdzv_id or run_dir.name, "--max-restarts", str(c.max_restarts)]
    if c.node_rank is not None:
        # c10d numbers the nodes itself; the node rank says who hosts the store, so that no
        # agent has to guess it from host names.
        cmd += ["--rdzv-conf", f"is_host={int(c.node_rank == 0)}"]
    return cmd + ["-m", "pretrain", *rank_overrides(overrides, run_dir)]


def plan(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> LaunchPlan:
    return command_plan(command(cfg, overrides, run_dir), {**AGENT_ENV, **this_machine_env(cfg)})
