"""Kill it anywhere: runs the corpus job and a training run many times, each trial SIGKILLing one
process at a random moment, then reruns the same command until it finishes and compares the
result with an undisturbed run.

    python bench/chaos.py --trials 50            # the documented run (README: table)
    python bench/chaos.py --trials 3 --seed 7 --quick

Victims, one per trial (drawn with the trial's seed):
- dataprep: `ray_worker` (a Ray worker process of the job), `driver` (`python -m dataprep`);
- training (2 CPU ranks, ZeRO-2, `python -m launch`): `launcher`, `torchrun` (its agent,
  `launch.agent`), `rank` (one `python -m pretrain` rank), `save` (a rank killed inside a
  checkpoint save, held open by `debug.sleep_in_save_s` at a random checkpoint step).
The moment is uniform over the undisturbed run's duration (for `save`: inside the save). A job
that ends before its moment (faster than the reference, which may have paid a one-time build) is
run again from nothing with the moment drawn over the duration it just took, up to 3 draws; a
trial still not killed then counts as run undisturbed (the table's `killed` column).

A trial passes when, after the reruns, (dataprep) every shard's and the manifest's checksum and
stats.json (seconds aside) equal the reference run's, or (training) every step's loss is within
1e-5 of the reference, the consumed samples are equal, and every checkpoint folder is complete
and loads as the latest; and in both, no process the job started is left running (30 s after
it ended; a local Ray's agents, which outlive a killed driver by their last report's 60 s
timeout, 90 s). A failing trial keeps its folder and prints the seed that reproduces it. The
last line reads `chaos: <P> of <N> trials identical to the undisturbed run`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATAPREP_VICTIMS = ("ray_worker", "driver")
TRAINING_VICTIMS = ("launcher", "torchrun", "rank", "save")
QUICK_INPUTS = "[cc-main-2020-34_resiliparse_warcfile.warc.gz,wget-2024_dolma_sample-0000.warc.gz]"


def dataprep_args(out: Path, quick: bool) -> list[str]:
    args = [f"output_dir={out}", "shards.shard_tokens=100000"]
    return args + ([f"ingest.patterns={QUICK_INPUTS}"] if quick else [])


def training_args(run_dir: Path, manifest: Path, quick: bool) -> list[str]:
    steps, every = (16, 4) if quick else (40, 10)
    return [f"data.manifest={manifest}", f"run_dir={run_dir}", f"train.max_steps={steps}",
            f"checkpoint.every_steps={every}", "checkpoint.keep_last=0", "train.log_every_steps=1",
            "train.micro_batch_size=4", "optim.warmup_steps=4", "train.progress_bar=false",
            "metrics.tensorboard=false"]


def start(module: str, args: list[str], log: Path) -> subprocess.Popen:
    with log.open("a") as f:
        f.write(f"$ python -m {module} {' '.join(args)}\n")
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, start_new_session=True,
                            stdout=log.open("a"), stderr=subprocess.STDOUT)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def find_victim(proc: subprocess.Popen, victim: str, rng: random.Random):
    """The process to kill now, or None if there is none (yet, or any more)."""
    kids = descendants(proc.pid)
    if victim in ("driver", "launcher"):
        return psutil.Process(proc.pid) if proc.poll() is None else None
    if victim == "ray_worker":
        busy = [p for p in kids if cmdline(p).startswith("ray::") and "IDLE" not in cmdline(p)
                and not cmdline(p).startswith(RAY_AGENTS)]  # a task's worker, not the node's agents
        return rng.choice(busy) if busy else None
    if victim == "torchrun":
        agents = [p for p in kids if "launch.agent" in cmdline(p)]
        return agents[0] if agents else None
    ranks = [p for p in kids if " -m pretrain" in cmdline(p) and "launch.agent" not in cmdline(p)]
    return rng.choice(ranks) if ranks else None


def session(sid: int) -> list[psutil.Process]:
    """The live processes of a session (a job and everything it started, reparented or not)."""
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return out


# A local Ray's agents outlive a SIGKILLed driver: they report the raylet's death to the GCS,
# which died with it, and give up after that call's 60 s timeout. They are left to exit on
# their own and checked later (LINGER_S after their job ended), not counted as leaked at once.
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
LINGER_S = 90.0


def settle(proc: subprocess.Popen, grace: float = 30.0) -> tuple[list[str], list[psutil.Process]]:
    """Wait for everything the job started to exit on its own; kill and name what does not,
    except a local Ray's agents, returned to be checked later."""
    proc.wait()
    deadline = time.time() + grace
    while (left := session(proc.pid)) and time.time() < deadline \
            and not all(cmdline(p).startswith(RAY_AGENTS) for p in left):
        time.sleep(0.2)
    agents = [p for p in left if cmdline(p).startswith(RAY_AGENTS)]
    left = [p for p in left if p not in agents]
    names = [cmdline(p)[:60] for p in left]
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return names, agents


def leaked(agents: list[psutil.Process], deadline: float) -> list[str]:
    """The agents still running at `deadline` (waited for), killed and named."""
    while any(alive(p) for p in agents) and time.time() < deadline:
        time.sleep(0.5)
    names = []
    for p in agents:
        if alive(p):
            names.append(cmdline(p)[:40])
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    return names


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def disturbed(module: str, args: list[str], log: Path, victim: str, at: float, rng: random.Random,
              save_dir: Path | None = None, timeout: float = 900) -> tuple[str, float]:
    """Run once, SIGKILL the victim at `at` seconds (or, for `save`, once a rank sits inside the
    save), wait for the job to end; returns what happened and how long the job ran."""
    proc = start(module, args, log)
    started, what = time.time(), "finished before the kill"
    while proc.poll() is None and time.time() - started < timeout:
        ready = (save_dir is not None and any(save_dir.glob(".tmp-step_*/rng_rank*.json"))) if victim == "save" \
            else time.time() - started >= at
        if ready:
            target = find_victim(proc, victim, rng)
            if target is not None:
                try:
                    desc = cmdline(target)[:80]
                    target.send_signal(signal.SIGKILL)
                    what = f"killed {victim} after {time.time() - started:.1f} s ({desc})"
                    break
                except psutil.NoSuchProcess:
                    pass
        time.sleep(0.05)
    try:
        proc.wait(timeout=max(1.0, timeout - (time.time() - started)))
    except subprocess.TimeoutExpired:
        proc.kill()
        what += "; timed out"
    ran = time.time() - started
    left, agents = settle(proc)
    if left:
        raise RuntimeError(f"{what}; processes still running 30 s after the job ended: {left}")
    LINGERING.append((agents, time.time() + LINGER_S))
    return what, ran


LINGERING: list[tuple[list[psutil.Process], float]] = []  # the current trial's Ray agents, and when they must be gone


def kill_once(module: str, args: list[str], log: Path, victim: str, duration: float, window: float,
              rng: random.Random, output: Path, save_dir: Path | None = None, tries: int = 3) -> str:
    """disturbed() at a moment uniform over `window` x `duration`; a job that ends before its
    moment (faster than the reference run, which may have paid a one-time build) is run again
    from nothing, the moment drawn over the duration it just took, so that a trial is a kill."""
    for attempt in range(tries):
        what, ran = disturbed(module, args, log, victim, rng.uniform(0, duration * window), rng, save_dir)
        if what.startswith("killed") or attempt == tries - 1:
            return what + (f" (draw {attempt + 1})" if attempt else "")
        shutil.rmtree(output, ignore_errors=True)
        duration = ran
    raise AssertionError("unreachable")


def finish(module: str, args: list[str], log: Path, tries: int = 3) -> int:
    """Rerun the same command until it exits 0; returns how many reruns it took."""
    for attempt in range(1, tries + 1):
        proc = start(module, args, log)
        rc = proc.wait()
        LINGERING.append((settle(proc)[1], time.time() + LINGER_S))
        if rc == 0:
            return attempt
    raise RuntimeError(f"python -m {module} did not finish in {tries} reruns; see {log}")


def _normalized_json(path: Path, out: Path, shard_set: str | None) -> str:
    text = path.read_text().replace(str(out), "<OUT>")
    if shard_set:
        text = text.replace(shard_set, "<SET>")

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "seconds" not in k}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return json.dumps(strip(json.loads(text)), sort_keys=True)


def corpus_digest(out: Path) -> dict[str, str]:
    """sha256 of every shard file, of manifest.json and stats.json (paths of the output folder
    and seconds aside). The shard set's folder is named by how many sets the output folder has
    seen (a rerun of a finished job writes the next): its content is compared, not its number."""
    shard_set = json.loads((out / "manifest.json").read_text()).get("shard_set") if (out / "manifest.json").is_file() else None
    digest = {}
    for path in sorted(out.rglob("*")):
        rel = str(path.relative_to(out))
        if shard_set and rel.startswith(shard_set + "/"):
            rel = "<SET>" + rel[len(shard_set):]
        if path.suffix in (".bin", ".idx") and "shard" in path.name:
            digest[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.name in ("manifest.json", "stats.json") and path.parent == out:
            digest[rel] = hashlib.sha256(_normalized_json(path, out, shard_set).encode()).hexdigest()
    return digest


def run_record(run_dir: Path) -> dict:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {r["step"]: (r["loss"], r["consumed_samples"]) for r in rows}


def compare_training(run_dir: Path, reference: dict) -> str | None:
    from pretrain.checkpoint import COMPLETE, Checkpointer

    got = run_record(run_dir)
    if sorted(got) != sorted(reference):
        return f"logged steps differ: {sorted(set(got) ^ set(reference))[:10]}"
    for step, (loss, consumed) in reference.items():
        if abs(got[step][0] - loss) > 1e-5 or got[step][1] != consumed:
            return f"step {step}: loss {got[step][0]} vs {loss}, consumed {got[step][1]} vs {consumed}"
    ckpt = run_dir / "checkpoints"
    try:
        Checkpointer(ckpt, 0, 0).latest_tag()
    except RuntimeError as e:
        return str(e)
    for folder in ckpt.glob("step_*"):
        if not (folder / COMPLETE).is_file():
            return f"{folder} is not a complete checkpoint"
    return None


def check_lingering(pending: list, results: list[dict], wait: bool) -> list:
    """The Ray agents of earlier trials whose time is up (all of them, waited for, when `wait`):
    one still running fails the trial that left it. Returns those not yet due."""
    later = []
    for trial, agents, deadline in pending:
        if not wait and time.time() < deadline:
            later.append((trial, agents, deadline))
        elif left := leaked(agents, deadline):
            r = results[trial]
            r["ok"], r["problem"] = False, f"processes still running {LINGER_S:.0f} s after their job ended: {left}"
            print(f"trial {trial:3d} {r['victim']:>10}: DIFFERENT: {r['problem']}", flush=True)
    return later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 archives, 16 training steps (CI)")
    parser.add_argument("--window", type=float, default=1.0,
                        help="the kill moment is uniform over this fraction of the undisturbed run's duration")
    parser.add_argument("--victims", nargs="+", default=list(DATAPREP_VICTIMS + TRAINING_VICTIMS))
    parser.add_argument("--work", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("CCP_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    work = Path(args.work or tempfile.mkdtemp(prefix="chaos_"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "reference.log"

    t0 = time.time()
    ref_corpus = work / "reference_corpus"
    finish("dataprep", dataprep_args(ref_corpus, args.quick), log, tries=1)
    dataprep_seconds = time.time() - t0
    reference_corpus = corpus_digest(ref_corpus)
    manifest = ref_corpus / "manifest.json"
    t0 = time.time()
    finish("launch", training_args(work / "reference_run", manifest, args.quick), log, tries=1)
    training_seconds = time.time() - t0
    reference_run = run_record(work / "reference_run")
    LINGERING.clear()  # undisturbed jobs shut their Ray down
    print(f"reference runs: dataprep {dataprep_seconds:.0f} s ({len(reference_corpus)} files compared), "
          f"training {training_seconds:.0f} s ({len(reference_run)} steps); work folder {work}", flush=True)

    results, pending = [], []
    for trial in range(args.trials):
        seed = args.seed * 100_003 + trial
        rng = random.Random(seed)
        victim = rng.choice(args.victims)
        folder = work / f"trial_{trial:03d}_{victim}"
        trial_log = folder / "log"
        folder.mkdir(parents=True, exist_ok=True)
        t0, what = time.time(), "?"
        try:
            if victim in DATAPREP_VICTIMS:
                out = folder / "corpus"
                cmd = dataprep_args(out, args.quick)
                what = kill_once("dataprep", cmd, trial_log, victim, dataprep_seconds, args.window, rng, out)
                reruns = finish("dataprep", cmd, trial_log)
                got = corpus_digest(out)
                diff = sorted(k for k in set(got) | set(reference_corpus) if got.get(k) != reference_corpus.get(k))
                problem = f"differs: {diff[:5]}" if diff else None
            else:
                run_dir = folder / "run"
                cmd = training_args(run_dir, manifest, args.quick)
                if victim == "save":
                    every, steps = (4, 16) if args.quick else (10, 40)
                    cmd += ["debug.sleep_in_save_s=5", f"debug.sleep_in_save_step={rng.randrange(every, steps + 1, every)}"]
                what = kill_once("launch", cmd, trial_log, victim, training_seconds, args.window, rng, run_dir,
                                 save_dir=run_dir / "checkpoints")
                reruns = finish("launch", cmd, trial_log)
                problem = compare_training(run_dir, reference_run)
        except Exception as e:  # a trial that breaks is a failed trial, kept for a look
            reruns, problem = -1, f"{type(e).__name__}: {e}"
        pending += [(trial, agents, deadline) for agents, deadline in LINGERING if agents]
        LINGERING.clear()
        seconds = time.time() - t0
        ok = problem is None
        results.append({"trial": trial, "seed": seed, "victim": victim, "what": what, "reruns": reruns,
                        "ok": ok, "problem": problem, "seconds": seconds})
        print(f"trial {trial:3d} {victim:>10}: {'identical' if ok else 'DIFFERENT: ' + str(problem)} "
              f"({what}; {reruns} rerun(s), {seconds:.0f} s)", flush=True)
        if ok:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"  kept {folder}; reproduce with --seed {args.seed} (trial {trial}, seed {seed})", flush=True)
        pending = check_lingering(pending, results, wait=trial == args.trials - 1)

    (work / "chaos.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{'victim':>10} {'trials':>7} {'passed':>7} {'killed':>7} {'seconds':>8}")
    for victim in args.victims:
        rows = [r for r in results if r["victim"] == victim]
        if rows:
            print(f"{victim:>10} {len(rows):>7} {sum(r['ok'] for r in rows):>7} "
                  f"{sum(r['what'].startswith('killed') for r in rows):>7} {sum(r['seconds'] for r in rows):>8.0f}")
    passed = sum(r["ok"] for r in results)
    print(f"chaos: {passed} of {len(results)} trials identical to the undisturbed run")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
