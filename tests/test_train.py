"""2-rank DeepSpeed ZeRO-2 training on the corpus job's shards, through `python -m launch`."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO, SHARED_DATA, run_module

pytestmark = pytest.mark.slow
STEPS, EVERY = 24, 8


def _args(corpus, run_dir):
    return [f"data.manifest={corpus / 'manifest.json'}", f"run_dir={run_dir}", f"train.max_steps={STEPS}",
            f"checkpoint.every_steps={EVERY}", "train.micro_batch_size=4", "optim.warmup_steps=4",
            "data.seed=3"]


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
    # The launcher says where the run lives and how the loss moved.
    assert f"run_dir: {run_dir}" in proc.stdout
    assert f"loss: first {first:.4f} (step 1), last {records[-1]['loss']:.4f} (step {STEPS})" in proc.stdout
    assert "2 ranks, global batch 8, ZeRO-2" in proc.stdout


def test_checkpoints_are_complete_and_pointed_to(straight):
    run_dir, _ = straight
    ckpt = run_dir / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == f"step_{STEPS:08d}"
    tags = sorted(p.name for p in ckpt.iterdir() if p.is_dir())
    assert tags == [f"step_{s:08d}" for s in (8, 16, 24)]
    for tag in tags:
        assert json.loads((ckpt / tag / "complete.json").read_text())["step"] == int(tag[5:])
        assert (ckpt / tag / "rng_rank00000.json").is_file() and (ckpt / tag / "rng_rank00001.json").is_file()
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
