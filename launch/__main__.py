"""`python -m launch [hydra overrides]`: start training on the configured cluster and report.

`cluster.dry_run=true` prints the exact commands (or sbatch script, or Ray trainer) and stops.

`python -m launch -m model=scale_1,scale_2,...` (a Hydra multirun) trains one run after the
other, each in its own run_dir `hydra.sweep.dir/hydra.sweep.subdir` (conf/pretrain.yaml:
runs/sweep/<job number>_<model>); `python -m pretrain.scaling` fits scaling laws to them.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from dataprep.overrides import override_key
from launch.agent import FAILURES_ENV
from launch.plan import LaunchError
from pretrain import resume
from pretrain.config import PretrainConfig, register
from pretrain.metrics import per_source_losses

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register()


def report(run_dir: Path, started: float) -> tuple[bool, str]:
    """(whether the run reached train.max_steps in this launch, a summary to print)."""
    summary_file = run_dir / "summary.json"
    metrics_file = run_dir / "metrics.jsonl"
    records = [json.loads(l) for l in metrics_file.read_text().splitlines() if l.strip()] if metrics_file.exists() else []
    finished = summary_file.exists() and summary_file.stat().st_mtime >= started
    lines = [f"run_dir: {run_dir}"]
    if records:
        first, last = records[0], records[-1]
        lines.append(f"loss: first {first['loss']:.4f} (step {first['step']}), "
                     f"last {last['loss']:.4f} (step {last['step']})")
        vals = [r for r in records if "val_loss" in r]
        if vals:
            lines.append(f"val_loss: {vals[-1]['val_loss']:.4f} (step {vals[-1]['step']}){per_source_losses(vals[-1])}")
    latest = run_dir / "checkpoints" / "latest"
    if latest.exists():
        lines.append(f"latest checkpoint: {run_dir / 'checkpoints' / latest.read_text().strip()}")
    lines.append(f"metrics: {metrics_file}")
    return finished, "\n".join(lines)


def stopped(run_dir: Path, rc: int, failures: list[dict]) -> str:
    """The last lines of a launch whose run stopped before train.max_steps: how far it got, why,
    the checkpoint it continues from, and that the same command does so."""
    progress = run_dir / "progress"
    step, total = (progress.read_text().split() + ["?", "?"])[:2] if progress.exists() else ("0", "?")
    if failures:
        first = failures[0]
        why = (f"rank {first['rank']} killed by {first['signal']}" if first["signal"]
               else f"rank {first['rank']} exited with code {first['exitcode']}")
    else:
        why = f"the launcher exited with code {rc}"
    lines = [f"stopped at step {step} of {total} ({why})"]
    latest = run_dir / "checkpoints" / "latest"
    command = "python -m launch " + shlex.join(sys.argv[1:])
    if latest.exists():
        tag = latest.read_text().strip()
        lines.append(f"latest complete checkpoint: {run_dir / 'checkpoints' / tag} (step {int(tag[5:])})")
        lines.append(f"the same command resumes from it: {command}")
    else:
        lines.append(f"no complete checkpoint yet: the same command starts again from step 0: {command}")
    return "\n".join(lines)


def sweep_run_dir(config: PretrainConfig, overrides: list[str]) -> str:
    """Under `-m`, each job's run_dir: the folder Hydra made for it in the sweep."""
    keys = {override_key(o) for o in overrides}
    if "run_dir" in keys or ("resume" in keys and config.resume not in ("auto", "never")):
        raise LaunchError("under -m each run's run_dir is hydra.sweep.dir/hydra.sweep.subdir; "
                          "set hydra.sweep.dir=DIR instead of run_dir (or resume) for the sweep")
    return HydraConfig.get().runtime.output_dir


LAUNCHERS = {"local": "launch.local", "torchrun": "launch.torchrun", "hostfile": "launch.hostfile",
             "slurm": "launch.slurm", "ray": "launch.ray_cluster"}


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="pretrain")
def main(cfg) -> None:
    try:  # the schema's value checks
        config: PretrainConfig = OmegaConf.to_object(cfg)
    except ValueError as e:
        sys.exit(f"launch: {e}")
    overrides = list(HydraConfig.get().overrides.task)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        try:
            config.run_dir = sweep_run_dir(config, overrides)
        except LaunchError as e:
            sys.exit(f"launch: {e}")
    try:  # resume=<run_dir>: that run's saved config, the command line's overrides on top
        config = resume.apply(config, overrides)
    except ValueError as e:
        sys.exit(f"launch: {e}")
    run_dir = Path(config.run_dir).resolve()
    name = config.cluster.name
    if name not in LAUNCHERS:
        sys.exit(f"launch: cluster.name={name!r} is not one of {', '.join(LAUNCHERS)}")
    try:
        plan = importlib.import_module(LAUNCHERS[name]).plan(config, overrides, run_dir)
    except LaunchError as e:
        sys.exit(f"launch: {e}")
    print(plan.text, flush=True)
    if config.cluster.dry_run:
        return
    started = time.time()
    failures_file = run_dir / f".launch_failures.{os.getpid()}.json"  # written by launch.agent
    os.environ[FAILURES_ENV] = str(failures_file)
    rc = plan.start()
    if not plan.trains:
        sys.exit(rc)
    finished, text = report(run_dir, started)
    print(text, flush=True)
    if rc != 0 and finished:
        # Training and its last checkpoint completed; a rank failed while exiting.
        print(f"launch: the launcher exited with {rc} after training finished", file=sys.stderr)
        rc = 0
    failures = json.loads(failures_file.read_text()) if failures_file.exists() else []
    failures_file.unlink(missing_ok=True)
    if rc != 0 or not finished:
        print(stopped(run_dir, rc, failures), flush=True)
        sys.exit(rc or 1)


if __name__ == "__main__":
    main()
