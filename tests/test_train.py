"""2-rank DeepSpeed ZeRO-2 training on the corpus job's shards, through `python -m launch`:
learning, checkpoints, resume after a kill, after a kill inside a save, and on another world size."""

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO, SHARED_DATA, run_module

pytestmark = pytest.mark.slow
STEPS, EVERY = 24, 8


def _args(corpus, run_dir, **changes):
    """The straight run's overrides; `changes` ({"train.max_steps": 8, ...}) replace or add keys."""
    args = {"data.manifest": corpus / "manifest.json", "run_dir": run_dir, "train.max_steps": STEPS,
            "checkpoint.every_steps": EVERY, "train.micro_batch_size": 4, "optim.warmup_steps": 4,
            "data.seed": 3, "train.log_every_steps": 1, **changes}
    return [f"{k}={v}" for k, v in args.items()]


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    proc = run_module("launch", *_args(corpus, run_dir))
    return run_dir, proc


def test_two_rank_training_learns_and_reports(straight, corpus):
    run_dir, proc = straight
    records = _metrics(run_dir)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        assert {"step", "loss", "lr", "tokens_per_s", "mfu"} <= set(r)
        assert r["tokens_per_s"] > 0 and r["consumed_samples"] == r["step"] * 8  # 2 ranks x 4
    vocab = json.loads((corpus / "manifest.json").read_text())["tokenizer"]["vocab_size"]
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-4:]) / 4
    # Untrained, the loss sits at ln(vocab); a model that learned nothing stays there.
    assert abs(first - math.log(vocab)) < 0.5
    assert last < first - 1.0, (first, last)
    assert "val_loss" in records[-1] and records[-1]["val_loss"] < first - 1.0
    # Validation: each source's held-out documents, and the mixture's loss weighted by the targets.
    manifest = json.loads((corpus / "manifest.json").read_text())
    per_source = {name: records[-1][f"val_loss/{name}"] for name in manifest["validation"]["sources"]}
    assert set(per_source) == set(manifest["sources"]) and all(v < first - 1.0 for v in per_source.values())
    assert records[-1]["val_loss"] == pytest.approx(
        sum(manifest["sources"][n]["target_weight"] * v for n, v in per_source.items()), rel=1e-6)
    assert "val_loss/" not in "".join(k for r in records[:-1] for k in r)  # only the steps that evaluate
    assert "validation: held-out documents of crawl (" in proc.stdout
    # The launcher says where the run lives and how the loss moved.
    assert f"run_dir: {run_dir}" in proc.stdout
    assert f"loss: first {first:.4f} (step 1), last {records[-1]['loss']:.4f} (step {STEPS})" in proc.stdout
    crawl = next(n for n in per_source)
    assert f"val_loss: {records[-1]['val_loss']:.4f} (step {STEPS}) ({crawl} {per_source[crawl]:.4f}, " in proc.stdout
    assert "2 ranks, global batch 8, ZeRO-2" in proc.stdout


def test_metrics_reach_tensorboard_with_memory_and_perplexity(straight):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = straight
    records = _metrics(run_dir)
    assert all(r["rss_gb"] > 0 and r["grad_norm"] > 0 for r in records)
    assert records[-1]["val_ppl"] == pytest.approx(math.exp(records[-1]["val_loss"]), rel=1e-9)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/rss_gb",
            "val/val_loss", "val/val_ppl", "val/val_loss/crawl", "val/val_loss/books"} <= set(events.Tags()["scalars"])
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [r["step"] for r in records]
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in records], rel=1e-6)


def test_the_run_leaves_a_report_that_renders(straight):
    from report_images import rendered_charts

    run_dir, proc = straight
    charts = rendered_charts(run_dir / "report.html")  # written by rank 0 when training ends
    assert charts[:2] == ["training and validation loss", "learning rate, gradient norm, tokens/s and MFU"]
    assert f"report: {run_dir / 'report.html'}" in proc.stdout


def test_checkpoints_are_complete_and_pointed_to(straight):
    run_dir, _ = straight
    ckpt = run_dir / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == f"step_{STEPS:08d}"
    tags = sorted(p.name for p in ckpt.iterdir() if p.is_dir())
    assert tags == [f"step_{s:08d}" for s in (8, 16, 24)]
    assert not list(ckpt.glob("*.py"))  # DeepSpeed's recovery scripts load unsafely: removed
    for tag in tags:
        assert json.loads((ckpt / tag / "complete.json").read_text())["step"] == int(tag[5:])
        assert (ckpt / tag / "rng_rank00000.json").is_file() and (ckpt / tag / "rng_rank00001.json").is_file()
        info = json.loads((ckpt / tag / "complete.json").read_text())
        assert (info["world_size"], info["global_batch"], info["zero_stage"]) == (2, 8, 2)
        assert info["consumed_samples"] == int(tag[5:]) * 8
        assert (ckpt / tag / "config.yaml").is_file()
    assert (run_dir / "config.yaml").is_file()


def test_killed_run_continues_with_the_same_command(straight, corpus, tmp_path):
    """Kill the whole run after its first checkpoint, start the same command again: step counter,
    learning rate and data position continue, so every step's loss equals the uninterrupted run's."""
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "launch", *_args(corpus, run_dir)]
    env = {**os.environ, "CCP_SHARED_DATA": str(SHARED_DATA)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    # The whole job dies at once (a lost allocation): launcher, torchrun and both ranks.
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip()[5:])
    assert killed_at < STEPS, "the run finished before it could be killed"

    again = run_module("launch", *_args(corpus, run_dir))
    assert f"resumed from {run_dir / 'checkpoints' / f'step_{killed_at:08d}'} at step {killed_at}" in again.stdout
    resumed, reference = _metrics(run_dir), _metrics(straight[0])
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(resumed, reference):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9), a["step"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
        assert a["consumed_samples"] == b["consumed_samples"]


class Planted:
    """Unpickling this runs `touch <path>`: what a malicious checkpoint would carry."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(straight, corpus, tmp_path):
    """DeepSpeed loads its files with weights_only=False; ours load them weights-only with an
    allowlist of DeepSpeed's classes: a planted callable is refused by resume and export alike."""
    import shutil

    import torch

    from pretrain.checkpoint import UnsafeCheckpointError
    from pretrain.engine import consolidated_state_dict

    src = straight[0] / "checkpoints" / f"step_{STEPS:08d}"
    run_dir = tmp_path / "planted"
    step_dir = run_dir / "checkpoints" / src.name
    shutil.copytree(src, step_dir)
    (run_dir / "checkpoints" / "latest").write_text(src.name + "\n")
    marker = tmp_path / "code_ran"
    states = step_dir / "mp_rank_00_model_states.pt"
    data = torch.load(states, weights_only=False, map_location="cpu")  # our own file, trusted here
    data["planted"] = Planted(marker)
    torch.save(data, states)

    proc = run_module("launch", *_args(corpus, run_dir), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"refused to load {step_dir}" in out and "posix.system" in out, out[-3000:]
    with pytest.raises(UnsafeCheckpointError, match="unpickling it could run code"):
        consolidated_state_dict(step_dir)
    assert not marker.exists()


def _samples(run_dir):
    """step -> the global sample indices the ranks trained on (debug.record_samples)."""
    by_step = {}
    for path in sorted((run_dir / "samples").glob("rank_*.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            by_step.setdefault(r["step"], []).extend(r["indices"])
    return by_step


def test_world_size_changes_keep_the_data_position_and_the_losses(straight, corpus, tmp_path):
    """2 ranks for 4 steps, then 1 rank (micro batch 8: the same global batch) to step 8, then 2
    ranks again to step 12, each time `resume=<run_dir>`: the ZeRO-2 checkpoint goes through
    DeepSpeed's universal format; every sample index is read exactly once, in the straight run's
    order, and the losses follow the straight 2-rank run."""
    run_dir = tmp_path / "resized"
    first = run_module("launch", *_args(corpus, run_dir, **{"train.max_steps": 4, "checkpoint.every_steps": 4,
                                                            "optim.lr_decay_steps": STEPS,
                                                            "debug.record_samples": "true"}))
    assert "2 ranks, global batch 8" in first.stdout
    one = run_module("launch", f"resume={run_dir}", "cluster.nproc=1", "train.micro_batch_size=8",
                     "train.max_steps=8")
    assert f"resumed from {run_dir / 'checkpoints' / 'step_00000004'} at step 4" in one.stdout
    assert "written by 2 ranks, ZeRO-2, loaded through the universal format" in one.stdout
    assert "1 ranks, global batch 8" in one.stdout
    two = run_module("launch", f"resume={run_dir}", "cluster.nproc=2", "train.micro_batch_size=4",
                     "train.max_steps=12")
    assert "written by 1 ranks, ZeRO-2, loaded through the universal format" in two.stdout

    samples = _samples(run_dir)
    assert sorted(samples) == list(range(1, 13))
    for step, indices in samples.items():  # none repeated, none skipped, in order
        assert sorted(indices) == list(range((step - 1) * 8, step * 8)), step
    resized, reference = _metrics(run_dir), _metrics(straight[0])[:12]
    assert [r["step"] for r in resized] == list(range(1, 13))
    for a, b in zip(resized, reference):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9), a["step"]
        # One rank sums the same 8 samples in another order than two: float rounding only.
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]



def _rank_process(root: psutil.Process, rank: int):
    for child in root.children(recursive=True):
        try:
            env = child.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if env.get("RANK") == str(rank) and "pretrain" in " ".join(child.cmdline()):
            return child
    return None


def test_rank_killed_during_a_save_leaves_latest_on_the_previous_checkpoint(straight, corpus, tmp_path):
    """Checkpoints at steps 4 and 8; each rank sleeps inside the step-8 save once its files are written.
    SIGKILL rank 1 while the step-8 save sleeps: `latest` still names step 4, the partial step 8
    is never taken for a checkpoint, and the same command continues from step 4."""
    run_dir = tmp_path / "killed_in_save"
    changes = {"train.max_steps": 8, "checkpoint.every_steps": 4, "optim.lr_decay_steps": STEPS}
    sleep = {"debug.sleep_in_save_s": 60, "debug.sleep_in_save_step": 8}
    args = _args(corpus, run_dir, **changes, **sleep)
    cmd = [sys.executable, "-m", "launch", *args]
    env = {**os.environ, "CCP_SHARED_DATA": str(SHARED_DATA)}
    log = tmp_path / "launch.log"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt = run_dir / "checkpoints"
    written = ckpt / ".tmp-step_00000008" / "rng_rank00001.json"
    try:
        deadline = time.time() + 300
        while not written.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert written.exists(), "the step-8 save never started"
        assert (ckpt / "latest").read_text().strip() == "step_00000004"
        victim = _rank_process(psutil.Process(proc.pid), 1)
        assert victim is not None
        victim.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            for p in [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]:
                os.kill(p, signal.SIGKILL)
            proc.wait()
    assert (ckpt / "latest").read_text().strip() == "step_00000004"
    assert not (ckpt / "step_00000008").exists()
    assert (ckpt / ".tmp-step_00000008").exists()  # left for the next start to remove
    # The launcher's last lines say that the run stopped, why, and how to continue it.
    last = log.read_text().strip().splitlines()[-3:]
    assert last == [
        "stopped at step 8 of 8 (rank 1 killed by SIGKILL)",
        f"latest complete checkpoint: {ckpt / 'step_00000004'} (step 4)",
        "the same command resumes from it: python -m launch " + shlex.join(args),
    ], last

    again = run_module("launch", *_args(corpus, run_dir, **changes))
    assert "removing incomplete checkpoint" in again.stdout
    assert f"resumed from {ckpt / 'step_00000004'} at step 4" in again.stdout
    assert (ckpt / "latest").read_text().strip() == "step_00000008"
    assert not (ckpt / ".tmp-step_00000008").exists()
    for a, b in zip(_metrics(run_dir), _metrics(straight[0])[:8]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
