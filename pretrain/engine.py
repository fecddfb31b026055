"""The one place that imports DeepSpeed: process group, engine and its config."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from pretrain.comm import free_port
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


def deepspeed_env() -> None:
    """For offline tools (export, conversion): any accelerator does; don't probe for one."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_classes() -> list:
    """The classes DeepSpeed's checkpoint files hold beyond tensors and containers (found with
    torch.serialization.get_unsafe_globals_in_checkpoint over ZeRO 0-3, fp32/bf16, CPU offload
    and universal checkpoints; DynamicLossScaler is what fp16 runs save): the safe globals of
    pretrain/checkpoint.py's weights-only loading."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def init_distributed(cfg: PretrainConfig) -> None:
    """Join the process group that torchrun / the deepspeed launcher described in the environment
    (RANK, WORLD_SIZE, MASTER_ADDR, ...); a bare `python -m pretrain` is a group of one."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
    os.environ.setdefault("MASTER_ADDR", cfg.cluster.master_addr)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    deepspeed = _deepspeed(cfg)
    cuda = accelerator_name(cfg) == "cuda"
    if cuda:  # before the group exists, so that NCCL and its barriers use this rank's GPU
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % max(1, torch.cuda.device_count()))
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", auto_mpi_discovery=False)


def device_of(engine) -> torch.device:
    """The device the engine computes on. The loop puts its batches there and reduces its
    metrics there (pretrain/comm.py); nothing it hands to a collective lives elsewhere."""
    return torch.device(engine.device)


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


def ds_config(cfg: PretrainConfig, world_size: int, load_universal: bool = False) -> dict[str, Any]:
    t, z = cfg.train, cfg.zero  # values are checked by the schema (pretrain/config.py)
    if t.precision == "fp16" and accelerator_name(cfg) == "cpu":  # a device's, not a value's limit
        raise ValueError("train.precision=fp16 is not available on CPU: use bf16 or fp32")
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
    if load_universal:
        config["checkpoint"] = {"load_universal": True}
    _merge(config, cfg.deepspeed)
    return config


def _merge(base: dict, extra: dict) -> None:
    """Raw keys over the generated config, nested dicts merged key by key."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices; leave biases, norms and (1-D) gains alone."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_engine(model: torch.nn.Module, cfg: PretrainConfig, world_size: int, load_universal: bool = False):
    """Wrap `model` in a DeepSpeed engine with AdamW and the warmup-cosine schedule.
    `load_universal`: the checkpoint to load is in DeepSpeed's universal format."""
    deepspeed = _deepspeed(cfg)
    o = cfg.optim
    groups = param_groups(model, o.weight_decay)
    if cfg.zero.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, adamw_mode=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                      fused=fused_adamw(accelerator_name(cfg)))
    if cfg.train.compile:
        compile_blocks(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=ds_config(cfg, world_size, load_universal),
    )
    if cfg.zero.stage == 0 and cfg.train.precision == "fp32":
        _keep_grad_norm(engine)
        if world_size == 1:
            # Averaging gradients over one rank is the identity; skip flattening and copying them.
            engine.enable_backward_allreduce = False
    return engine


def fused_adamw(accelerator: str) -> bool:
    """AdamW's fused kernel (one launch for all parameters) where torch has it: CUDA."""
    return accelerator == "cuda"


def compile_blocks(model: torch.nn.Module, backend: str = "inductor") -> None:
    """train.compile: torch.compile each transformer block in place (`Module.compile`), as
    torchtitan does: the graphs are small and shared by all blocks, activation checkpointing
    and ZeRO's hooks wrap them from outside, and the state dict keeps its names, so
    checkpoints move freely between compiled and eager runs."""
    for block in model.blocks:
        block.compile(backend=backend)


def _keep_grad_norm(engine) -> None:
    """ZeRO-0 in fp32 clips with a plain clip_grad_norm_ and drops the norm it computed, so
    get_global_grad_norm() would stay None; keep it (same call, same clipping)."""
    from deepspeed.runtime.utils import clip_grad_norm_

    def clip_fp32_gradients():  # the norm stays a device tensor: read only when logged
        engine._global_grad_norm = clip_grad_norm_(
            parameters=engine.module.parameters(), max_norm=engine.gradient_clipping(), mpu=engine.mpu)

    engine.clip_fp32_gradients = clip_fp32_gradients


def repair_universal_load(engine, cfg: PretrainConfig) -> None:
    """After loading a universal checkpoint, undo two slips of DeepSpeed 0.19's ZeRO-3 loader
    that would make the continuation inexact: it copies the first parameter group's
    hyperparameters onto every group (norms and biases would get weight decay), and it gives
    every group's state one shared `step` tensor, which Adam then advances once per group per
    step (wrong bias correction). Harmless for stages 1-2, which load correctly."""
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    decays = [cfg.optim.weight_decay, 0.0]  # param_groups(): decay, no decay
    if len(inner.param_groups) == len(decays):
        for group, decay in zip(inner.param_groups, decays):
            group["weight_decay"] = decay
    for state in inner.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def to_universal(checkpoint: Path, out: Path) -> None:
    """Convert a ZeRO checkpoint folder into DeepSpeed's universal format (one file per
    parameter and optimizer state, unsharded), which loads on any world size and ZeRO stage.
    Runs in this process on CPU; the caller makes it atomic."""
    import argparse

    deepspeed_env()
    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(input_folder=str(checkpoint), output_folder=str(out), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)  # our model: no TP/PP slicing info needed
    ds_to_universal.main(args)


def consolidated_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict of a checkpoint folder, whatever the ZeRO stage and world
    size that wrote it (DeepSpeed's zero_to_fp32: merges the optimizer's fp32 shards)."""
    deepspeed_env()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from pretrain.checkpoint import weights_only_loading

    checkpoint = Path(checkpoint)
    with weights_only_loading(checkpoint):
        if not list(checkpoint.glob("*optim_states.pt")):
            # ZeRO-0 in fp32: no optimizer shards; the module's own weights are the fp32 weights.
            states = torch.load(checkpoint / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
            return {k: v.float() for k, v in states["module"].items()}
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
    return {k: v.contiguous() for k, v in state.items()}


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
