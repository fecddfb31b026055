"""Run a stage's tasks on Ray, skipping those that finished before, as they would be made now.

A task is one unit of work over one input (usually a file). When it has written its outputs
(each by temporary name + rename) it writes a completion marker holding its statistics and the
fingerprint of what made them (dataprep/fingerprint.py: the settings, input files and upstream
outputs that shape them). A rerun skips every task whose marker holds the fingerprint it would
be made with now, so after a crash only unfinished work is redone and the outputs end the same as
an uninterrupted run's; a task made with other settings or inputs is redone (`rerun=auto`, one
log line naming what changed) or stops the job (`rerun=strict`, an error naming it). A step the
driver itself runs once (`once`) keeps its result in a marker the same way.
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

from dataprep.config import check_rerun
from dataprep.fingerprint import Fingerprint
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
    own (address="local": even when another `ray start` runs on this machine), started when the
    first task is left to run (start_ray()): a rerun that finds every task done starts none. A Ray
    that is already initialized (a test, a Ray Job) is used as it is and left running."""
    global _start
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")

    def start() -> None:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
                     include_dashboard=False, logging_level=logging.WARNING)

    _start = start
    try:
        yield
    finally:
        _start = None
        if ray.is_initialized():
            ray.shutdown()


_start: Callable[[], None] | None = None  # how the job's ray_session starts Ray


def start_ray() -> None:
    """Start the job's Ray (ray_session) unless it runs already; outside a session, Ray starts
    itself at the first task, as it does."""
    if not ray.is_initialized() and _start is not None:
        _start()


def arrow_worker_memory() -> None:
    """Arrow's jemalloc gives freed pages back at once (decay 0) instead of after 10 s: otherwise a
    task that reads a file batch by batch kept every batch's pages (measured: +62 MiB peak against
    +32 MiB for a file of 50,000 documents)."""
    if pa.default_memory_pool().backend_name == "jemalloc":
        pa.jemalloc_set_decay_ms(0)


FINGERPRINT_KEY = "_fingerprint"  # where a marker keeps its fingerprint, beside the task's statistics


def _run_and_mark(fn: Callable[..., dict], marker: str, fingerprint: dict, args: tuple) -> dict:
    arrow_worker_memory()
    try:
        stats = fn(*args)
    except InputUnavailable as e:  # its input could not be read: no marker, a rerun tries again
        return {FAILED: str(e)}
    write_json(Path(marker), {**stats, FINGERPRINT_KEY: fingerprint})
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


class RerunMismatch(ValueError):
    """rerun=strict, and finished work was made with other settings or inputs than the job's."""


class Reruns:
    """What a rerun does with finished tasks whose markers hold another fingerprint than the one
    they would be made with now. `auto`: redo them (and so everything made from them, whose
    upstream digests change in turn), saying once which stage and which keys changed; `strict`:
    stop, naming them. One per job, shared by its stages."""

    def __init__(self, mode: str = "auto"):
        check_rerun(mode)
        self.mode = mode
        self._said: set[tuple[str, ...]] = set()

    def finished(self, stage: str, where: Path, markers: dict[str, tuple[Path, Fingerprint]]) -> dict[str, dict]:
        """The statistics of the tasks in `markers` (task -> its marker and fingerprint now) that
        finished as they would be made now; the others are to run."""
        done: dict[str, dict] = {}
        stale: dict[str, list[str]] = {}
        for name, (marker, fingerprint) in markers.items():
            if not marker.is_file():
                continue
            stats = json.loads(marker.read_text())
            before = stats.pop(FINGERPRINT_KEY, None)
            if before is not None and before.get("digest") == fingerprint.digest:
                done[name] = stats
            else:
                stale[name] = fingerprint.changes(before)
        if stale:
            self._changed(stage, where, len(stale), len(markers), [c for cs in stale.values() for c in cs])
        return done

    def _changed(self, stage: str, where: Path, n: int, total: int, changes: list[str]) -> None:
        changes = list(dict.fromkeys(changes))  # in order, once each
        shown = ", ".join(changes[:8]) + (f", and {len(changes) - 8} more" if len(changes) > 8 else "")
        if self.mode == "strict":
            raise RerunMismatch(
                f"rerun=strict: {n} of {total} finished [{stage}] tasks in {where} were made with other "
                f"settings or inputs ({shown}). Run again with those settings, with rerun=auto to redo "
                f"what they shape, or with another output_dir")
        own = tuple(c for c in changes if not c.endswith("(redone upstream)"))
        if own and own not in self._said:  # a change upstream was said where it happened
            self._said.add(own)
            log.info("[%s] %d/%d tasks were made with other settings or inputs (%s): redoing them and "
                     "everything made from them", stage, n, total, shown)


def once(marker: Path, step: Callable[[], dict], fingerprint: Fingerprint, reruns: Reruns, stage: str) -> dict:
    """A step the driver runs once (training the quality classifier, making the tokenizer): the
    first run calls step() and keeps what it returns (JSON) in `marker`, written last, with the
    step's fingerprint; a rerun reads the marker and skips the step, unless it was made otherwise
    (Reruns)."""
    done = reruns.finished(stage, marker.parent.parent, {marker.stem: (marker, fingerprint)})
    if done:
        log.info("[%s] %s already done, skipped", stage, marker.stem)
        return done[marker.stem]
    result = step()
    write_json(marker, {**result, FINGERPRINT_KEY: fingerprint.to_json()})
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
    def __init__(self, stage: str, stage_dir: Path, reruns: Reruns | None = None):
        self.stage = stage
        self.stage_dir = Path(stage_dir)
        self.reruns = reruns or Reruns()

    def marker(self, task: str) -> Path:
        return marker_path(self.stage_dir, task)

    def run(self, fn: Callable[..., dict], tasks: dict[str, tuple],
            fingerprints: Fingerprint | dict[str, Fingerprint],
            shared: Callable[[], tuple] | None = None) -> dict[str, dict]:
        """Run fn(*args) for each task not done as `fingerprints` (one for all tasks, or one each)
        say it would be made now; returns every task's statistics. shared(): more arguments every
        task gets after its own (an index they all read), made once, and only when a task is left
        to run: a rerun of a finished stage neither makes them nor starts Ray."""
        fps = fingerprints if isinstance(fingerprints, dict) else dict.fromkeys(tasks, fingerprints)
        results = self.reruns.finished(self.stage, self.stage_dir, {n: (self.marker(n), fps[n]) for n in tasks})
        pending: dict[Any, str] = {}
        extra = ()
        if len(results) < len(tasks):
            start_ray()
            extra = shared() if shared is not None else ()
        for name, args in tasks.items():
            if name not in results:
                pending[_remote.remote(fn, str(self.marker(name)), fps[name].to_json(), (*args, *extra))] = name
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
