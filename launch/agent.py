"""`python -m launch.agent [torchrun arguments]`: torchrun's elastic agent, run as is, which also
records how its workers ended.

torchrun reports a failed worker (its rank, exit code or signal) only in the traceback it
prints. The launcher needs it for its last lines ("stopped at step N of M (rank 1 killed by
SIGKILL)"), so this agent writes torchrun's own failure records, as JSON, to the file named by
CCP_LAUNCH_FAILURES before exiting as torchrun does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun

FAILURES_ENV = "CCP_LAUNCH_FAILURES"


def describe(failures: dict) -> list[dict]:
    """{rank, exitcode, signal} for each failed worker, first failure first."""
    out = []
    for rank, failure in sorted(failures.items(), key=lambda kv: kv[1].timestamp):
        signal = failure.signal_name() if failure.exitcode < 0 else None
        out.append({"rank": int(rank), "exitcode": int(failure.exitcode), "signal": signal})
    return out


def _exit_with_launcher() -> None:
    """An agent whose launcher (`python -m launch`) was killed stops too, and its ranks with it
    (they watch the agent): a rerun of the launcher must not meet a run still going."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def main() -> None:
    if os.environ.get(FAILURES_ENV):  # started by the launcher (not by srun on a Slurm node)
        _exit_with_launcher()
    try:
        torchrun()
    except ChildFailedError as e:
        path = os.environ.get(FAILURES_ENV)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(describe(e.failures)) + "\n")
        raise


if __name__ == "__main__":
    main()
