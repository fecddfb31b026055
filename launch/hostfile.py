"""`cluster=hostfile`: DeepSpeed's launcher over a DeepSpeed hostfile ("host slots=N" lines),
reaching the hosts with pdsh (ssh) or OpenMPI (mpirun); one process per slot.

pdsh runs each node's command through a remote shell, and DeepSpeed's runner quotes neither
the script's arguments nor the exported variables for it. So every rank runs
`python -m launch.worker PAYLOAD` (see launch/worker.py), host names must be plain, and the few
values DeepSpeed itself puts in that shell command are checked to need no quoting.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from launch import worker
from launch.plan import DEFAULT_PORT, LaunchError, LaunchPlan, checked_env, command_plan, rank_overrides
from pretrain.config import PretrainConfig

# A host name or address; never starting with "-", which ssh or mpirun would take as an option.
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_LINE = re.compile(r"(\S+)\s+slots=(\d+)")
RUNNERS = ("pdsh", "openmpi")


def read_hostfile(path: Path) -> dict[str, int]:
    """{host: slots} in file order, as DeepSpeed reads it; refuses what it would misread."""
    hosts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if not match:
            raise LaunchError(f"{path}: {line!r} is not a 'host slots=N' line")
        host, slots = match[1], int(match[2])
        if not _HOST.fullmatch(host):
            raise LaunchError(f"{path}: {host!r} is not a plain host name or address")
        if host in hosts:
            raise LaunchError(f"{path}: {host} is listed twice")
        hosts[host] = slots
    if not hosts:
        raise LaunchError(f"{path}: no hosts")
    return hosts


def plan(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> LaunchPlan:
    c = cfg.cluster
    if not c.hostfile:
        raise LaunchError("cluster=hostfile needs cluster.hostfile=PATH (lines of 'host slots=N')")
    if c.multinode_runner not in RUNNERS:
        raise LaunchError(f"cluster.multinode_runner must be one of {RUNNERS}, not {c.multinode_runner!r}")
    hostfile = Path(c.hostfile).resolve()
    hosts = read_hostfile(hostfile)
    master = c.master_addr or next(iter(hosts))
    if not _HOST.fullmatch(master):
        raise LaunchError(f"cluster.master_addr: {master!r} is not a plain host name or address")
    if c.multinode_runner == "pdsh":
        for what, value in (("working directory", os.getcwd()), ("python", sys.executable)):
            if shlex.quote(value) != value:
                raise LaunchError(f"pdsh puts the {what} unquoted in a shell command: {value!r} needs "
                                  "quoting; use a plain path or cluster.multinode_runner=openmpi")
    port = c.master_port or DEFAULT_PORT
    args = rank_overrides(overrides, run_dir)
    env = checked_env(cfg)
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile),
           "--launcher", c.multinode_runner, "--master_addr", master, "--master_port", str(port),
           "--no_local_rank", "--module", "launch.worker", worker.encode(args, env, master, port)]
    notes = (f"# hosts: {', '.join(f'{h} ({n} slots)' for h, n in hosts.items())}",
             f"# each rank: python -m pretrain {shlex.join(args)}",
             f"# rank environment: {shlex.join(f'{k}={v}' for k, v in env.items()) or '(inherited)'}")
    return command_plan(cmd, {}, notes)
