"""Typed schema for `conf/pretrain.yaml` (also what `python -m launch` composes).

Registered in Hydra's ConfigStore so that an unknown key or a value of the wrong type stops the
job before any work, with an error that names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

from pretrain.model import ModelConfig


@dataclass
class ZeroConfig:
    stage: int = 2
    offload_optimizer: bool = False
    offload_param: bool = False
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 50_000_000
    allgather_bucket_size: int = 50_000_000


@dataclass
class OptimConfig:
    lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    warmup_steps: int = 10
    # Length of the cosine decay; None means train.max_steps. Keep it fixed to stop a run
    # early and continue it later on the same schedule.
    lr_decay_steps: Optional[int] = None
    grad_clip: float = 1.0


@dataclass
class DataConfig:
    manifest: str = "outputs/corpus/manifest.json"
    seed: int = 1234
    # Share of the packed sequences held out for validation loss.
    val_fraction: float = 0.05


@dataclass
class TrainConfig:
    max_steps: int = 100
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 needs a GPU)
    seed: int = 1234
    log_every_steps: int = 1
    eval_every_steps: int = 0  # 0: only at the end
    eval_batches: int = 4


@dataclass
class CheckpointConfig:
    every_steps: int = 50
    keep_last: int = 3


@dataclass
class ClusterConfig:
    name: str = "local"
    nproc: int = 2
    launcher: str = "torchrun"  # torchrun | deepspeed
    master_addr: str = "127.0.0.1"
    master_port: Optional[int] = None  # None: a free port
    # Accelerator type for DeepSpeed; None: cuda when torch sees a GPU, else cpu.
    accelerator: Optional[str] = None


@dataclass
class MetricsConfig:
    # Peak dense FLOP/s of one device in TFLOP/s for MFU; None: known GPUs are looked up, on
    # other devices MFU is not reported (null).
    peak_tflops: Optional[float] = None


@dataclass
class PretrainConfig:
    run_dir: str = "runs/tiny"
    # auto: continue from run_dir/checkpoints/latest when there is one; never: start fresh
    # (refuses a run_dir that already has checkpoints); or a checkpoint folder to start from.
    resume: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    zero: ZeroConfig = field(default_factory=ZeroConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Raw DeepSpeed config keys merged last over the generated config (escape hatch).
    deepspeed: Dict[str, Any] = field(default_factory=dict)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainConfig)
