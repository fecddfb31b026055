"""The loop's collectives take tensors on the engine's device, and it reads the device only at
the steps that log, evaluate or save (tests/device_guard.py: a stand-in accelerator + a guard
around torch.distributed)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from pretrain.comm import free_port

import device_guard as g

pytestmark = pytest.mark.slow
STEPS, LOG, EVAL, SAVE, ACCUM = 20, 10, 10, 10, 2


def test_instruments_tell_device_tensors_from_host_tensors():
    with g.FakeDevice():
        on_device = torch.zeros(3, device=g.FAKE)
        derived = (on_device + 1).sum()
        moved = torch.tensor([1.0, 2.0]).to(g.FAKE)
        host = torch.tensor([1.0, 2.0])
        back = derived.cpu()
        assert on_device.device == g.FAKE and derived.device == g.FAKE and moved.device == g.FAKE
        assert host.device.type == "cpu" and back.device.type == "cpu"
        assert [g.marked(t) for t in (on_device, derived, moved, host, back)] == [True, True, True, False, False]
        assert float(derived) == 3.0  # the values are real

    # A collective called from our code with a host tensor fails, with a device tensor passes.
    calls = []
    collective = g.guard("all_reduce", lambda t: calls.append(t))
    ours = {}
    exec(compile("def reduce(c, t):\n    c(t)\n", str(REPO / "pretrain" / "x.py"), "exec"), ours)
    with g.FakeDevice():
        ours["reduce"](collective, torch.ones(2, device=g.FAKE))
        with pytest.raises(RuntimeError, match="got a tensor on the host"):
            ours["reduce"](collective, torch.ones(2))
    assert len(calls) == 1
    g.state["violations"].clear()
    g.state["collectives"].clear()


def test_two_ranks_reduce_on_the_device_and_sync_only_at_log_steps(corpus, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           str(REPO / "tests" / "device_guard.py"), f"data.manifest={corpus / 'manifest.json'}",
           f"run_dir={run_dir}", f"train.max_steps={STEPS}", f"train.log_every_steps={LOG}",
           f"train.eval_every_steps={EVAL}", f"checkpoint.every_steps={SAVE}",
           f"train.grad_accum_steps={ACCUM}", "train.micro_batch_size=2",
           f"eval.every_steps={EVAL}", "eval.limit=2", "eval.batch_size=4"]  # zero-shot tasks too
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    guards = [json.loads((run_dir / f"guard_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(not s["violations"] for s in guards), [s["violations"] for s in guards]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log_steps = {1, LOG, EVAL, SAVE, STEPS}
    for s in guards:
        assert s["micro_steps"] == STEPS * ACCUM
        where = {(c["what"], c["where"].split(":")[0]) for c in s["collectives"]}
        # The guard saw the loop's own reductions (loss, memory, evaluation) and the checkpoint's barriers.
        assert ("all_reduce", "comm.py") in where and ("barrier", "checkpoint.py") in where
        reduced_at = {c["step"] for c in s["collectives"] if c["what"] == "all_reduce"}
        read_at = {r["step"] for r in s["reads"]}
        assert reduced_at == log_steps and read_at == log_steps, (reduced_at, read_at)
        # A handful of reads per log step (loss, memory, validation, zero-shot), not one per micro step.
        per_step = [sum(r["step"] == k for r in s["reads"]) for k in sorted(log_steps)]
        assert max(per_step) <= 4, per_step
        assert any(c["where"].startswith("evaluate.py") for c in s["reads"])
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == sorted(log_steps)
    for r in rows:
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "consumed_samples", "seconds", "rss_gb"} <= set(r)
    assert "val_loss" in rows[-1] and "val_loss" in rows[1] and "val_loss" not in rows[0]
    zero_shot = [json.loads(l) for l in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert sorted({(z["step"], z["task"], z["metric"], z["n"]) for z in zero_shot}) == sorted(
        (step, task, metric, 2) for step in (EVAL, STEPS)
        for task, metric in (("lambada", "accuracy"), ("lambada", "perplexity"), ("wikitext2", "bits_per_byte")))
    # One reduction and one read per evaluation, whatever the number of sources: each has its loss.
    sources = json.loads((corpus / "manifest.json").read_text())["validation"]["sources"]
    assert len(sources) == 4 and all(f"val_loss/{name}" in rows[-1] for name in sources)
