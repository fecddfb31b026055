"""Launchers without training: the exact commands, scripts and trainers each one builds, and that
hostile host names, paths and config values reach the ranks as data, never as commands."""

import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import REPO
from launch import worker
from launch.__main__ import LAUNCHERS
from launch.hostfile import read_hostfile
from launch.plan import LaunchError, hydra_quote, rank_overrides

PY = sys.executable


def hostile(tmp_path: Path) -> str:
    """A value that runs `touch tmp_path/pwned` wherever a shell interprets it."""
    pwned = tmp_path / "pwned"
    return f"a b 'q' \"dq\" ;touch {pwned}; $(touch {pwned}) `touch {pwned}`,x"


def plan(name: str, *overrides: str, run_dir: Path):
    overrides = (f"cluster={name}", *overrides)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = OmegaConf.to_object(compose("pretrain", overrides=list(overrides)))
    return importlib.import_module(LAUNCHERS[name]).plan(cfg, list(overrides), run_dir)


def write_fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!{PY}\n{body}")
    (bin_dir / name).chmod(0o755)


def test_run_dir_reaches_every_rank_exactly(tmp_path):
    parser = OverridesParser.create()
    for value in (hostile(tmp_path), "/plain/run_dir", "x\\'y\\", "tail\\"):
        assert parser.parse_override(f"run_dir={hydra_quote(value)}").value() == value
    args = rank_overrides(["run_dir=old", "cluster.dry_run=true", "train.max_steps=5"], Path("/abs/run"))
    assert args == ["train.max_steps=5", "run_dir=/abs/run"]


def test_torchrun_command(tmp_path):
    run_dir = tmp_path / "run"
    p = plan("torchrun", "cluster.nnodes=2", "cluster.node_rank=1", "cluster.master_addr=10.0.0.1",
             "cluster.master_port=29600", "cluster.nproc=8", "cluster.max_restarts=3", run_dir=run_dir)
    cmd = shlex.split(p.text)
    cmd = cmd[cmd.index(PY):]
    assert cmd == [PY, "-m", "launch.agent", "--nnodes", "2", "--nproc-per-node", "8",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", "10.0.0.1:29600", "--rdzv-id", "run",
                   "--max-restarts", "3", "--rdzv-conf", "is_host=0", "-m", "pretrain",
                   "cluster=torchrun", "cluster.nnodes=2", "cluster.node_rank=1",
                   "cluster.master_addr=10.0.0.1", "cluster.master_port=29600", "cluster.nproc=8",
                   "cluster.max_restarts=3", f"run_dir={run_dir}"]
    elastic = shlex.split(plan("torchrun", "cluster.nnodes=1:4", run_dir=run_dir).text)
    assert elastic[elastic.index("--nnodes") + 1] == "1:4" and "--rdzv-conf" not in elastic
    assert elastic[elastic.index("--rdzv-endpoint") + 1] == "127.0.0.1:29500"


def test_hostfile_sends_values_as_payload(tmp_path):
    (tmp_path / "hostfile").write_text("# two nodes\nnode-1 slots=8\n\nnode-2 slots=4\n")
    run_dir = tmp_path / hostile(tmp_path)
    env_value = hostile(tmp_path)
    p = plan("hostfile", f"cluster.hostfile={tmp_path}/hostfile", f"+cluster.env.NCCL_X={hydra_quote(env_value)}",
             run_dir=run_dir)
    cmd = shlex.split(p.text.splitlines()[0])
    assert cmd[:13] == [PY, "-m", "deepspeed.launcher.runner", "--hostfile", str(tmp_path / "hostfile"),
                        "--launcher", "pdsh", "--master_addr", "node-1", "--master_port", "29500",
                        "--no_local_rank", "--module"]
    # What DeepSpeed puts into the remote shell command needs no quoting at all.
    assert all(shlex.quote(a) == a for a in cmd[5:])
    spec = worker.decode(cmd[-1])
    assert spec == {"args": ["cluster=hostfile", f"cluster.hostfile={tmp_path}/hostfile",
                             f"+cluster.env.NCCL_X={hydra_quote(env_value)}",
                             f"run_dir={hydra_quote(str(run_dir))}"],
                    "env": {"NCCL_X": env_value}, "master_addr": "node-1", "master_port": 29500}
    assert "# hosts: node-1 (8 slots), node-2 (4 slots)" in p.text


@pytest.mark.parametrize("line", ["-oProxyCommand=touch${IFS}x slots=1", "node;touch slots=1",
                                  "node$(id) slots=1", "node slots=1 extra", "node slots=x"])
def test_hostfile_refuses_what_a_shell_or_ssh_would_read(tmp_path, line):
    (tmp_path / "hostfile").write_text(f"ok slots=1\n{line}\n")
    with pytest.raises(LaunchError, match="hostfile"):
        read_hostfile(tmp_path / "hostfile")


def test_hostfile_refuses_unquotable_master_and_working_dir(tmp_path, monkeypatch):
    (tmp_path / "hostfile").write_text("node-1 slots=1\n")
    args = (f"cluster.hostfile={tmp_path}/hostfile",)
    with pytest.raises(LaunchError, match="master_addr"):
        plan("hostfile", *args, "cluster.master_addr='a;b'", run_dir=tmp_path)
    spaced = tmp_path / "a dir"
    spaced.mkdir()
    monkeypatch.chdir(spaced)
    with pytest.raises(LaunchError, match="working directory"):
        plan("hostfile", *args, run_dir=tmp_path)
    # mpirun takes arguments, not a shell line: no such limit.
    assert plan("hostfile", *args, "cluster.multinode_runner=openmpi", run_dir=tmp_path)


def test_worker_takes_env_and_openmpi_ranks(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "2")
    payload = worker.encode(["run_dir='/a b'"], {"NCCL_X": "$(x)"}, "node-1", 29500)
    monkeypatch.setattr(sys, "argv", ["launch.worker", payload])
    ran = {}
    monkeypatch.setattr(worker.runpy, "run_module", lambda name, **kw: ran.update(name=name, argv=sys.argv[:]))
    worker.main()
    assert ran == {"name": "pretrain", "argv": ["pretrain", "run_dir='/a b'"]}
    assert {k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                      "MASTER_PORT", "NCCL_X")} == {
        "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "node-1", "MASTER_PORT": "29500", "NCCL_X": "$(x)"}


def test_slurm_script_gives_srun_the_exact_arguments(tmp_path):
    run_dir = tmp_path / hostile(tmp_path)
    env_value = hostile(tmp_path)
    p = plan("slurm", "cluster.partition=gpu", "cluster.nproc=4", "cluster.max_restarts=2",
             "cluster.sbatch_args=['--account=abc']", f"+cluster.env.NCCL_X={hydra_quote(env_value)}",
             run_dir=run_dir)
    script = (run_dir / "train.sbatch").read_text()
    assert p.text.startswith(f"# {run_dir / 'train.sbatch'}\n{script}")
    assert p.text.endswith(shlex.join(["sbatch", str(run_dir / "train.sbatch")]))
    assert [l for l in script.splitlines() if l.startswith("#SBATCH")] == [
        "#SBATCH --job-name=ccpretrain", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4", "#SBATCH --time=01:00:00", "#SBATCH --partition=gpu",
        "#SBATCH --account=abc"]
    # Run the script with Slurm's commands faked: srun records what it was given.
    fake = tmp_path / "bin"
    write_fake(fake, "scontrol", "print('node-a\\nnode-b')")
    write_fake(fake, "srun", f"import json, os, sys\nopen({str(tmp_path / 'srun.json')!r}, 'w').write("
                             "json.dumps({'argv': sys.argv[1:], 'env': os.environ['NCCL_X'],"
                             " 'store': os.environ['TORCH_DISABLE_SHARE_RDZV_TCP_STORE']}))")
    subprocess.run(["bash", str(run_dir / "train.sbatch")], check=True, cwd=tmp_path,
                   env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SLURM_JOB_ID": "42",
                        "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node-[a-b]"})
    got = json.loads((tmp_path / "srun.json").read_text())
    assert got["env"] == env_value and got["store"] == "1"
    assert got["argv"] == [
        "--kill-on-bad-exit=1", PY, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "4",
        "--max-restarts", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "node-a:29500", "--rdzv-id", "42",
        "-m", "pretrain", "cluster=slurm", "cluster.partition=gpu", "cluster.nproc=4", "cluster.max_restarts=2",
        "cluster.sbatch_args=['--account=abc']", f"+cluster.env.NCCL_X={hydra_quote(env_value)}",
        f"run_dir={hydra_quote(str(run_dir))}"]
    assert not (tmp_path / "pwned").exists()


def test_slurm_refuses_sbatch_options_sbatch_would_misread(tmp_path):
    with pytest.raises(LaunchError, match="SBATCH"):
        plan("slurm", "cluster.sbatch_args=['--comment=a b']", run_dir=tmp_path)


def test_slurm_dry_run_writes_and_run_submits(tmp_path):
    fake = tmp_path / "bin"
    write_fake(fake, "sbatch", f"import sys\nopen({str(tmp_path / 'sbatch.txt')!r}, 'a').write(repr(sys.argv[1:]) + '\\n')\n"
                               "print('Submitted batch job 42')")
    run_dir = tmp_path / "run"
    args = [PY, "-m", "launch", "cluster=slurm", f"run_dir={run_dir}"]
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    dry = subprocess.run([*args, "cluster.dry_run=true"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert (run_dir / "train.sbatch").read_text() in dry.stdout
    assert f"sbatch {run_dir / 'train.sbatch'}" in dry.stdout and not (tmp_path / "sbatch.txt").exists()
    real = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert "Submitted batch job 42" in real.stdout
    assert (tmp_path / "sbatch.txt").read_text() == f"{[str(run_dir / 'train.sbatch')]!r}\n"


def test_ray_trainer(tmp_path):
    p = plan("ray", "cluster.nproc=4", "cluster.max_restarts=2", "+cluster.env.NCCL_X=1", "data.manifest=m.json",
             run_dir=tmp_path / "run")
    assert p.text.splitlines()[:5] == [
        "ray.init(address=None)",
        "TorchTrainer(launch.ray_cluster.train_loop, train_loop_config={'cfg': <the composed config>},",
        "    scaling_config=ScalingConfig(num_workers=4, use_gpu=False),",
        "    torch_config=TorchConfig(backend='gloo'),",
        f"    run_config=RunConfig(name='run', storage_path={str(tmp_path)!r}, "
        "worker_runtime_env={'env_vars': {'NCCL_X': '1'}}, failure_config=FailureConfig(max_failures=2)))"]
    # Workers do not share the driver's working directory: paths go absolute.
    assert f"data.manifest={Path.cwd() / 'm.json'}" in p.text
