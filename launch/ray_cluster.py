"""`cluster=ray`: Ray Train's TorchTrainer runs our training loop in cluster.nproc workers of a Ray
cluster (cluster.address, else RAY_ADDRESS, else a local Ray), DeepSpeed inside each worker.

Ray Train's storage is run_dir itself, so the checkpoints the loop writes there are the ones
reported to Ray, without a copy. When a worker is lost, Ray restarts the group (up to
cluster.max_restarts times) and every worker resumes from the checkpoint Ray last saw.
Paths are resolved here and must mean the same on every node (a shared filesystem).
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import replace
from pathlib import Path

import ray
import ray.train
from ray.train import Checkpoint, CheckpointUploadMode, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from launch.plan import LaunchPlan, checked_env, rank_overrides
from pretrain.config import PretrainConfig


def train_loop(config: dict) -> None:
    """One Ray Train worker: Ray has set up the process group; DeepSpeed joins it."""
    from pretrain.train import run

    cfg: PretrainConfig = config["cfg"]
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart: continue from the last checkpoint reported
        cfg = replace(cfg, resume=checkpoint.path)
    run(cfg, on_checkpoint=report_checkpoint)


def report_checkpoint(step: int, path: Path, metrics: dict) -> None:
    """Called by every worker after each complete checkpoint (ray.train.report is a barrier)."""
    first = ray.train.get_context().get_world_rank() == 0
    ray.train.report(
        {k: v for k, v in metrics.items() if v is not None},
        checkpoint=Checkpoint(str(path)) if first else None,
        checkpoint_dir_name=path.name,
        # Already under run_dir, Ray's storage: register it where it is.
        checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD,
    )


def _args(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def plan(cfg: PretrainConfig, overrides: list[str], run_dir: Path) -> LaunchPlan:
    c = cfg.cluster
    cfg = replace(cfg, run_dir=str(run_dir), data=replace(cfg.data, manifest=str(Path(cfg.data.manifest).resolve())))
    scaling = dict(num_workers=c.nproc, use_gpu=c.use_gpu)
    backend = dict(backend="nccl" if c.use_gpu else "gloo")
    failure = dict(max_failures=c.max_restarts)
    run_args = dict(name=run_dir.name, storage_path=str(run_dir.parent),
                    worker_runtime_env={"env_vars": checked_env(cfg)})
    text = "\n".join([
        f"ray.init(address={c.address!r})",
        "TorchTrainer(launch.ray_cluster.train_loop, train_loop_config={'cfg': <the composed config>},",
        f"    scaling_config=ScalingConfig({_args(scaling)}),",
        f"    torch_config=TorchConfig({_args(backend)}),",
        f"    run_config=RunConfig({_args(run_args)}, failure_config=FailureConfig({_args(failure)})))",
        f"# the config: pretrain.yaml + {shlex.join(rank_overrides(overrides, run_dir))}",
        f"# data.manifest={cfg.data.manifest}",
    ])

    def start() -> int:
        ray.init(address=c.address, logging_level=logging.WARNING)
        try:
            TorchTrainer(
                train_loop,
                train_loop_config={"cfg": cfg},
                scaling_config=ScalingConfig(**scaling),
                torch_config=TorchConfig(**backend),
                run_config=RunConfig(failure_config=FailureConfig(**failure), **run_args),
            ).fit()
        except ray.train.TrainingFailedError as e:
            print(f"launch: Ray Train failed: {e}", flush=True)
            return 1
        finally:
            ray.shutdown()
        return 0

    return LaunchPlan(text, start)
