"""`cluster=slurm`: an sbatch script in run_dir, submitted with `sbatch SCRIPT`.

The allocation runs one task per node; each task is a torchrun agent, and the agents meet at a
c10d rendezvous on the allocation's first node. Every value from the config is shell-quoted
(shlex.quote). sbatch reads #SBATCH lines with quoting rules of its own, so options there may
not contain spaces, quotes or backslashes.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from launch.plan import DEFAULT_PORT, LaunchError, LaunchPlan, checked_env, command_plan, rank_overrides
from launch.torchrun import AGENT_ENV
from pretrain.config import PretrainConfig

_SBATCH_OPTION = re.compile(r"[^\s'\"\\]+")


def sbatch_options(cfg: PretrainConfig) -> list[str]:
    c = cfg.cluster
    options = [f"--job-name={c.job_name}", f"--nodes={c.nnodes.replace(':', '-')}", "--ntasks-per-node=1"]
    if c.gpus_per_node:
        options.append(f"--gpus-per-node={c.gpus_per_node}")
    options.append(f"--time={c.time}")
    if c.partition:
        options.append(f"--partition={c.partition}")
    options += c.sbatch_args
    for option in options:
        if not _SBATCH_OPTION.fullmatch(option):
            raise LaunchError(f"cluster: #SBATCH {option!r} has a space, quote or backslash")
    return options


def script(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> str:
    c, q = cfg.cluster, shlex.quote
    agent = [
        f"{q(sys.executable)} -m torch.distributed.run",
        f'--nnodes "$SLURM_NNODES" --nproc-per-node {c.nproc} --max-restarts {c.max_restarts}',
        f'--rdzv-backend c10d --rdzv-endpoint "$head_node:{c.master_port or DEFAULT_PORT}"'
        ' --rdzv-id "$SLURM_JOB_ID"',
        f"-m pretrain {' '.join(map(q, rank_overrides(overrides, run_dir)))}",
    ]
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {option}" for option in sbatch_options(cfg)),
        "# Written by `python -m launch cluster=slurm`.",
        "set -euo pipefail",
        f"cd {q(os.getcwd())}",
        *(f"export {name}={q(value)}" for name, value in {**AGENT_ENV, **checked_env(cfg)}.items()),
        "# One torchrun agent per node; the first node of the allocation hosts the rendezvous.",
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        "srun --kill-on-bad-exit=1 " + " \\\n    ".join(agent),
        "",
    ])


def plan(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> LaunchPlan:
    path = run_dir / "train.sbatch"
    text = script(cfg, overrides, run_dir)
    # Written in a dry run too: the script is what a dry run is for.
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    submit = command_plan(["sbatch", str(path)], {}, trains=False)
    return LaunchPlan(f"# {path}\n{text}\n{submit.text}", submit.start, trains=False)
