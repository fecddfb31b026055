"""`python -m launch [hydra overrides]`: start training on the configured cluster and report.

`cluster.dry_run=true` prints the exact commands (or sbatch script, or Ray trainer) and stops.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

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


LAUNCHERS = {"local": "launch.local", "torchrun": "launch.torchrun", "hostfile": "launch.hostfile",
             "slurm": "launch.slurm", "ray": "launch.ray_cluster"}


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="pretrain")
def main(cfg) -> None:
    try:  # the schema's value checks; resume=<run_dir>: that run's config, overrides on top
        config: PretrainConfig = OmegaConf.to_object(cfg)
        config = resume.apply(config, list(HydraConfig.get().overrides.task))
    except ValueError as e:
        sys.exit(f"launch: {e}")
    run_dir = Path(config.run_dir).resolve()
    name = config.cluster.name
    if name not in LAUNCHERS:
        sys.exit(f"launch: cluster.name={name!r} is not one of {', '.join(LAUNCHERS)}")
    try:
        plan = importlib.import_module(LAUNCHERS[name]).plan(
            config, list(HydraConfig.get().overrides.task), run_dir)
    except LaunchError as e:
        sys.exit(f"launch: {e}")
    print(plan.text, flush=True)
    if config.cluster.dry_run:
        return
    started = time.time()
    rc = plan.start()
    if not plan.trains:
        sys.exit(rc)
    finished, text = report(run_dir, started)
    print(text, flush=True)
    if rc != 0 and finished:
        # Training and its last checkpoint completed; a rank failed while exiting.
        print(f"launch: the launcher exited with {rc} after training finished", file=sys.stderr)
        rc = 0
    if rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
