"""Submit a job of ours (`python -m dataprep ...`) to a Ray cluster as a Ray Job, then follow it.

A Ray Job's entrypoint is a shell command line, so it is built with shlex.join: no override can
inject a command. Paths in the overrides must be valid on the cluster (absolute, shared).
"""

from __future__ import annotations

import shlex
import time
from typing import Optional

from ray.job_submission import JobStatus, JobSubmissionClient

from dataprep.overrides import override_key

# Overrides that only say how to submit: the job must not submit itself again, and on the cluster
# Ray tells it its address (RAY_ADDRESS).
SUBMIT_KEYS = ("ray.submit_job", "ray.address")


def entrypoint(module: str, overrides: list[str]) -> str:
    kept = [o for o in overrides if override_key(o) not in SUBMIT_KEYS]
    return shlex.join(["python", "-m", module, *kept])


def submit(module: str, overrides: list[str], address: Optional[str] = None,
           poll_s: float = 2.0) -> int:
    """Submit to `address` (None: RAY_ADDRESS), wait for the end, print the logs; exit status."""
    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=entrypoint(module, overrides))
    print(f"ray job {job_id}: {entrypoint(module, overrides)}", flush=True)
    while not (status := client.get_job_status(job_id)).is_terminal():
        time.sleep(poll_s)
    print(client.get_job_logs(job_id), end="", flush=True)
    print(f"ray job {job_id}: {status.value}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1
