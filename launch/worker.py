"""`python -m launch.worker PAYLOAD`: one rank started by DeepSpeed's multi-node launcher.

PAYLOAD is URL-safe base64 of JSON (the overrides, the environment, the rendezvous address):
pdsh runs each node's command through a remote shell and DeepSpeed quotes nothing for it, so
our values travel in a form no shell interprets. The rank then runs `python -m pretrain ARGS`.
"""

from __future__ import annotations

import base64
import json
import os
import runpy
import sys

# mpirun (DeepSpeed's openmpi runner) starts the ranks itself and names them its own way.
_OPENMPI = {"RANK": "OMPI_COMM_WORLD_RANK", "WORLD_SIZE": "OMPI_COMM_WORLD_SIZE",
            "LOCAL_RANK": "OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_WORLD_SIZE": "OMPI_COMM_WORLD_LOCAL_SIZE"}


def encode(args: list[str], env: dict[str, str], master_addr: str, master_port: int) -> str:
    spec = {"args": args, "env": env, "master_addr": master_addr, "master_port": master_port}
    return base64.urlsafe_b64encode(json.dumps(spec).encode()).decode()


def decode(payload: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(payload.encode()))


def main() -> None:
    spec = decode(sys.argv[1])
    # Before torch is imported: some variables (OMP_NUM_THREADS, NCCL_*) are read only once.
    os.environ.update(spec["env"])
    for name, mpi_name in _OPENMPI.items():
        if mpi_name in os.environ:
            os.environ.setdefault(name, os.environ[mpi_name])
    os.environ.setdefault("MASTER_ADDR", spec["master_addr"])
    os.environ.setdefault("MASTER_PORT", str(spec["master_port"]))
    sys.argv = ["pretrain", *spec["args"]]
    runpy.run_module("pretrain", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
