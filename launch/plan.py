"""What a launcher hands `python -m launch`, and what every rank is given whatever starts it.

Commands are argument lists run without a shell, so no host name, path or config value can
inject a command; where a shell is unavoidable (an sbatch script) values are shell-quoted.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hydra.core.override_parser.types import Quote, QuotedString

from dataprep.overrides import override_key
from pretrain.config import PretrainConfig

DEFAULT_PORT = 29500  # across nodes the port cannot be picked free: every node must know it
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN = re.compile(r"[A-Za-z0-9_./-]+")  # a Hydra value that needs no quotes


class LaunchError(Exception):
    """A cluster config that cannot be launched; the message names the key."""


@dataclass
class LaunchPlan:
    """How a launcher starts a run: the text a dry run prints and the function that starts it."""

    text: str  # what cluster.dry_run=true prints: the exact commands, script or trainer
    start: Callable[[], int]  # runs it; returns an exit status
    trains: bool = True  # False: start() only submits the job (sbatch)


def hydra_quote(value: str) -> str:
    """`value` as a Hydra override value that parses back to exactly `value`."""
    return value if _PLAIN.fullmatch(value) else QuotedString(text=value, quote=Quote.single).with_quotes()


def rank_overrides(overrides: list[str], run_dir: Path) -> list[str]:
    """The launch's overrides for `python -m pretrain`: every rank gets the same absolute run_dir,
    so one run writes one folder (no per-rank or timestamped folders)."""
    kept = [o for o in overrides if override_key(o) not in ("run_dir", "cluster.dry_run")]
    return kept + [f"run_dir={hydra_quote(str(run_dir))}"]


def checked_env(cfg: PretrainConfig) -> dict[str, str]:
    for name in cfg.cluster.env:
        if not _ENV_NAME.fullmatch(name):
            raise LaunchError(f"cluster.env: {name!r} is not an environment variable name")
    return dict(cfg.cluster.env)


def this_machine_env(cfg: PretrainConfig) -> dict[str, str]:
    """Variables for ranks started on this machine (added to its environment)."""
    import torch

    env = {}
    if cfg.cluster.accelerator:
        env["DS_ACCELERATOR"] = cfg.cluster.accelerator
    elif not torch.cuda.is_available() and "DS_ACCELERATOR" not in os.environ:
        env["DS_ACCELERATOR"] = "cpu"
    if "OMP_NUM_THREADS" not in os.environ:
        # Share the cores between the ranks instead of torchrun's default of one thread each.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, cfg.cluster.nproc)))
    return {**env, **checked_env(cfg)}


def command_plan(cmd: list[str], env: dict[str, str], notes: tuple[str, ...] = (),
                 trains: bool = True) -> LaunchPlan:
    """Run `cmd` (with `env` added to this process's environment) and wait for it."""
    shown = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *cmd] if env else cmd)

    def start() -> int:
        proc = subprocess.Popen(cmd, env={**os.environ, **env})
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            return proc.wait()

    return LaunchPlan("\n".join([shown, *notes]), start, trains)
