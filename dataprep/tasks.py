"""Run a stage's tasks on Ray, skipping those that finished before.

A task is one unit of work over one input (usually a file). When it has written its outputs
(each by temporary name + rename) it writes a completion marker holding its statistics; a rerun
after a crash skips every task with a marker, so only unfinished work is redone and the outputs
end the same as an uninterrupted run's. A step the driver itself runs once (`once`) keeps its
result in a marker the same way.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any, Callable

import pyarrow as pa
import ray

from dataprep.remote import InputUnavailable

log = logging.getLogger("dataprep")


def console_logging() -> None:
    """Progress and summaries to stdout, one timestamped line each (the jobs' console output)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout, force=True)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


@contextmanager
def ray_session(address: str | None, num_cpus: int | None, object_store_memory: int | None):
    """Ray for one job: the cluster at `address` (else RAY_ADDRESS), or a local Ray of the job's
    own (address="local": even when another `ray start` runs on this machine). A Ray that is
    already initialized (a test, a Ray Job) is used as it is and left running."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
                 include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def arrow_worker_memory() -> None:
    """Arrow's jemalloc gives freed pages back at once (decay 0) instead of after 10 s: otherwise a
    task that reads a file batch by batch kept every batch's pages (measured: +62 MiB peak against
    +32 MiB for a file of 50,000 documents)."""
    if pa.default_memory_pool().backend_name == "jemalloc":
        pa.jemalloc_set_decay_ms(0)


def _run_and_mark(fn: Callable[..., dict], marker: str, args: tuple) -> dict:
    arrow_worker_memory()
    try:
        stats = fn(*args)
    except InputUnavailable as e:  # its input could not be read: no marker, a rerun tries again
        return {FAILED: str(e)}
    write_json(Path(marker), stats)
    return stats


# Arrow's C++ allocator, chosen by this variable when a worker loads pyarrow: its default,
# mimalloc, kept what a task freed (measured with bench/bench_dedup.py: +78 MiB peak reading a
# file batch by batch, against +48 MiB with jemalloc). The driver's own setting, if any, wins.
WORKER_ENV = {"ARROW_DEFAULT_MEMORY_POOL": os.environ.get(
    "ARROW_DEFAULT_MEMORY_POOL", "jemalloc" if "jemalloc" in pa.supported_memory_backends() else "system")}
_remote = ray.remote(_run_and_mark).options(runtime_env={"env_vars": WORKER_ENV})
REPORT_EVERY_S = 5.0
FAILED = "failed"  # the key of a task's result when its input could not be read


def marker_path(stage_dir: str | Path, task: str) -> Path:
    """Where the task `task` of the stage working in `stage_dir` leaves its completion marker."""
    return Path(stage_dir) / "_done" / f"{task}.json"


def once(marker: Path, step: Callable[[], dict]) -> dict:
    """A step the driver runs once (training the quality classifier, making the tokenizer): the
    first run calls step() and keeps what it returns (JSON) in `marker`, written last; a rerun
    reads the marker and skips the step."""
    if marker.is_file():
        return json.loads(marker.read_text())
    result = step()
    write_json(marker, result)
    return result


def task_progress(stage: str, total: int, done: int, file: IO[str] | None = None):
    """A progress bar over a stage's tasks (done / total, rate, ETA) on `file` (stderr), shown
    only when that is a terminal, as training's; the log lines are printed above it."""
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=stage, unit="task", file=file, disable=None,
                dynamic_ncols=True, leave=False)


def _log_above(bar):
    """While a bar is shown, log lines go above it instead of through it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return nullcontext() if bar.disable else logging_redirect_tqdm()


class TaskRunner:
    def __init__(self, stage: str, stage_dir: Path):
        self.stage = stage
        self.stage_dir = Path(stage_dir)

    def marker(self, task: str) -> Path:
        return marker_path(self.stage_dir, task)

    def run(self, fn: Callable[..., dict], tasks: dict[str, tuple]) -> dict[str, dict]:
        """Run fn(*args) for each task not yet done; returns every task's statistics."""
        results: dict[str, dict] = {}
        pending: dict[Any, str] = {}
        for name, args in tasks.items():
            marker = self.marker(name)
            if marker.is_file():
                results[name] = json.loads(marker.read_text())
            else:
                pending[_remote.remote(fn, str(marker), args)] = name
        if len(results):
            log.info("[%s] %d/%d tasks already done, skipped", self.stage, len(results), len(tasks))
        start, docs, last_report = time.perf_counter(), 0, 0.0
        if not pending:
            return results
        with task_progress(self.stage, len(tasks), len(results)) as bar, _log_above(bar):
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    name = pending.pop(ref)
                    results[name] = ray.get(ref)
                    if FAILED in results[name]:
                        log.warning("[%s] task %s failed, left for a rerun: %s", self.stage, name,
                                    results[name][FAILED])
                    docs += int(results[name].get("docs_in", 0))
                    elapsed = time.perf_counter() - start
                    bar.set_postfix({"docs": docs, "docs/s": f"{docs / max(elapsed, 1e-9):.0f}"}, refresh=False)
                    bar.update(1)
                    if pending and elapsed - last_report < REPORT_EVERY_S:
                        continue
                    last_report = elapsed
                    log.info(
                        "[%s] %d/%d tasks done, %d docs in %.1fs (%.0f docs/s)",
                        self.stage, len(results), len(tasks), docs, elapsed, docs / max(elapsed, 1e-9),
                    )
        return results
