"""Many machines, proven on one: two torchrun "nodes", DeepSpeed's pdsh launcher over two hosts,
and a two-node Ray cluster all train the tiny model to the same per-step losses as one node with
two processes; a worker killed mid-run is restarted and the run ends as if nothing happened."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import CORPUS_OVERRIDES, REPO, SHARED_DATA, run_module
from launch.plan import hydra_quote
from pretrain.comm import free_port
from test_launch import hostile

pytestmark = pytest.mark.slow
PY = sys.executable
TINY = ("model=tiny", "train.max_steps=8", "checkpoint.every_steps=2", "train.micro_batch_size=4",
        "train.log_every_steps=1")


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_losses(found: list[float], reference: list[float]) -> bool:
    """Equal step by step within 1e-5 (the exact-resume standard). Ranks on one node reduce
    gradients through DeepSpeed's shared-memory all-reduce, ranks on two nodes through gloo:
    the same sums, added in another order, differ in the last bits of fp32."""
    return len(found) == len(reference) and found == pytest.approx(reference, abs=1e-5)


def kill_tree(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


@pytest.fixture
def launch():
    """Start `python -m launch ARGS` with its output in a log; whatever is left is killed after."""
    procs = []

    def start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        procs.append(subprocess.Popen(
            [PY, "-m", "launch", *args], cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "CCP_SHARED_DATA": str(SHARED_DATA), **(env or {})}))
        return procs[-1]

    yield start
    for proc in procs:
        kill_tree(proc)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 400) -> str:
    rc = proc.wait(timeout=timeout)
    out = log.read_text()
    assert rc == 0, out[-6000:]
    return out


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen) -> None:
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert latest.exists()


@pytest.fixture(scope="module")
def manifest(corpus) -> str:
    return f"data.manifest={corpus / 'manifest.json'}"


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> list[float]:
    """One node, two processes, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_module("launch", "cluster=local", "cluster.nproc=2", manifest, f"run_dir={run_dir}", *TINY)
    found = losses(run_dir)
    assert len(found) == 8 and found[-1] < found[0]
    return found


def test_two_torchrun_nodes_train_like_one_node(launch, manifest, reference, tmp_path):
    run_dir = tmp_path / hostile(tmp_path)
    args = ["cluster=torchrun", "cluster.nnodes=2", "cluster.nproc=1", f"cluster.master_port={free_port()}",
            f"+cluster.env.CCP_HOSTILE={hydra_quote(hostile(tmp_path))}", manifest,
            f"run_dir={hydra_quote(str(run_dir))}", *TINY]
    agents = [launch([*args, f"cluster.node_rank={rank}"], tmp_path / f"node{rank}.log") for rank in (0, 1)]
    for rank, agent in enumerate(agents):
        finish(agent, tmp_path / f"node{rank}.log")
    assert same_losses(losses(run_dir), reference), (losses(run_dir), reference)
    assert not (tmp_path / "pwned").exists()
    # One run, one folder: nothing per rank or per node beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["node0.log", "node1.log", run_dir.relative_to(tmp_path).parts[0]])


def test_hostfile_over_pdsh_trains_like_one_node(launch, manifest, reference, tmp_path):
    # pdsh, faked: run the command line it is given through a shell once per host, as sshd would.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pdsh").write_text(f"""#!{PY}
import subprocess, sys
args = sys.argv[1:]
hosts = args[args.index("-w") + 1].split(",")
line = " ".join(args[args.index("-w") + 2:])
procs = [subprocess.Popen(["sh", "-c", line.replace("%n", str(n))]) for n in range(len(hosts))]
sys.exit(max(p.wait() for p in procs))
""")
    (bin_dir / "ssh").write_text("#!/bin/sh\nexit 0\n")  # DeepSpeed's reachability check
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    (tmp_path / "hostfile").write_text("node-a slots=1\nnode-b slots=1\n")
    run_dir = tmp_path / hostile(tmp_path)
    args = ["cluster=hostfile", f"cluster.hostfile={tmp_path / 'hostfile'}", "cluster.master_addr=127.0.0.1",
            f"cluster.master_port={free_port()}", f"+cluster.env.CCP_HOSTILE={hydra_quote(hostile(tmp_path))}",
            manifest, f"run_dir={hydra_quote(str(run_dir))}", *TINY]
    log = tmp_path / "launch.log"
    out = finish(launch(args, log, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}), log)
    assert "pdsh -S -f 1024 -w node-a,node-b" in out  # DeepSpeed's multi-node path, not a local one
    assert same_losses(losses(run_dir), reference), (losses(run_dir), reference)
    assert not (tmp_path / "pwned").exists()


def test_killed_worker_restarts_from_checkpoint_and_ends_the_same(launch, manifest, reference, tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "launch.log"
    proc = launch(["cluster=torchrun", "cluster.nproc=2", "cluster.max_restarts=1",
                   f"cluster.master_port={free_port()}", manifest, f"run_dir={run_dir}", *TINY], log)
    wait_for_checkpoint(run_dir, proc)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "pretrain" in p.cmdline() and "launch.agent" not in p.cmdline()]
    assert len(workers) == 2, log.read_text()[-4000:]
    workers[-1].send_signal(signal.SIGKILL)
    out = finish(proc, log)
    assert "resumed from" in out, "the run finished before the kill"
    assert same_losses(losses(run_dir), reference), (losses(run_dir), reference)


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 80 * 2**20, "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_ray_cluster_trains_like_one_node_through_a_lost_worker(launch, ray_cluster, manifest, reference, tmp_path):
    run_dir = tmp_path / "run"
    log = tmp_path / "launch.log"
    proc = launch(["cluster=ray", f"cluster.address={ray_cluster.address}", "cluster.max_restarts=1",
                   manifest, f"run_dir={run_dir}", *TINY], log)
    wait_for_checkpoint(run_dir, proc)
    raylets = [psutil.Process(node.all_processes["raylet"][0].process.pid) for node in ray_cluster.list_all_nodes()]
    workers = [p for r in raylets for p in r.children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2, log.read_text()[-4000:]  # one per node
    workers[-1].send_signal(signal.SIGKILL)
    out = finish(proc, log)
    assert "resumed from" in out
    assert same_losses(losses(run_dir), reference), (losses(run_dir), reference)


def test_dataprep_on_a_ray_cluster_matches_local(ray_cluster, corpus, tmp_path):
    out = tmp_path / "corpus"
    run_module("dataprep", f"output_dir={out}", *CORPUS_OVERRIDES, f"ray.address={ray_cluster.address}")

    def shards(d):
        m = json.loads((d / "manifest.json").read_text())
        held = [e for v in m["validation"]["sources"].values() for e in v["shards"]]
        return [(s["bin_sha256"], s["idx_sha256"]) for s in m["shards"] + held]

    assert shards(out) == shards(corpus)
