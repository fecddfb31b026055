"""The one place that imports DeepSpeed: process group, engine and its config."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import torch

from pretrain.config import PretrainConfig

log = logging.getLogger(__name__)


def accelerator_name(cfg: PretrainConfig) -> str:
    if cfg.cluster.accelerator:
        return cfg.cluster.accelerator
    return "cuda" if torch.cuda.is_available() else "cpu"


def _deepspeed(cfg: PretrainConfig):
    # DeepSpeed picks its accelerator when first imported; say which before that happens.
    os.environ.setdefault("DS_ACCELERATOR", accelerator_name(cfg))
    import deepspeed

    return deepspeed


def init_distributed(cfg: PretrainConfig) -> None:
    """Join the process group that torchrun / the deepspeed launcher described in the environment
    (RANK, WORLD_SIZE, MASTER_ADDR, ...); a bare `python -m pretrain` is a group of one."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
    os.environ.setdefault("MASTER_ADDR", cfg.cluster.master_addr)
    if "MASTER_PORT" not in os.environ:
        from launch.ports import free_port

        os.environ["MASTER_PORT"] = str(free_port())
    deepspeed = _deepspeed(cfg)
    backend = "nccl" if accelerator_name(cfg) == "cuda" else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    if accelerator_name(cfg) == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))


def lr_lambda(cfg: PretrainConfig):
    """Linear warmup to optim.lr, then cosine decay to optim.min_lr over optim.lr_decay_steps."""
    o = cfg.optim
    warmup = max(0, o.warmup_steps)
    decay = o.lr_decay_steps or cfg.train.max_steps
    floor = o.min_lr / o.lr if o.lr > 0 else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, decay - warmup))
        return floor + 0.5 * (1.0 - floor) * (1.0 + math.cos(math.pi * progress))

    return factor


def ds_config(cfg: PretrainConfig, world_size: int) -> dict[str, Any]:
    t, z = cfg.train, cfg.zero
    if t.precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision must be fp32, bf16 or fp16, not {t.precision!r}")
    if t.precision == "fp16" and accelerator_name(cfg) == "cpu":
        raise ValueError("train.precision=fp16 is not available on CPU: use bf16 or fp32")
    if z.stage not in (0, 1, 2, 3):
        raise ValueError(f"zero.stage must be 0, 1, 2 or 3, not {z.stage}")
    zero: dict[str, Any] = {
        "stage": z.stage,
        "overlap_comm": z.overlap_comm,
        "contiguous_gradients": z.contiguous_gradients,
        "reduce_bucket_size": z.reduce_bucket_size,
        "allgather_bucket_size": z.allgather_bucket_size,
    }
    if z.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if z.offload_param:
        if z.stage != 3:
            raise ValueError("zero.offload_param needs zero.stage=3")
        zero["offload_param"] = {"device": "cpu"}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum_steps,
        "train_batch_size": t.micro_batch_size * t.grad_accum_steps * world_size,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": t.precision == "bf16"},
        "fp16": {"enabled": t.precision == "fp16"},
        "steps_per_print": 10**9,  # our loop reports progress
        "wall_clock_breakdown": False,
    }
    for key, value in cfg.deepspeed.items():
        config[key] = value
    return config


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices; leave biases, norms and (1-D) gains alone."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_engine(model: torch.nn.Module, cfg: PretrainConfig, world_size: int):
    """Wrap `model` in a DeepSpeed engine with AdamW and the warmup-cosine schedule."""
    deepspeed = _deepspeed(cfg)
    o = cfg.optim
    groups = param_groups(model, o.weight_decay)
    if cfg.zero.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, adamw_mode=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=ds_config(cfg, world_size),
    )
    return engine


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
