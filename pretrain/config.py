"""Typed schema for `conf/pretrain.yaml` (also what `python -m launch` composes).

Registered in Hydra's ConfigStore so that an unknown key or a value of the wrong type stops the
job before any work, with an error that names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

from hydra.core.config_store import ConfigStore

from pretrain.model import ModelConfig


def check(key: str, ok: bool, requirement: str, value: Any) -> None:
    """A config value check: raise naming the key, what it must be and what it is."""
    if not ok:
        raise ValueError(f"{key} must be {requirement}, not {value!r}")


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    check(key, value in choices, "one of " + ", ".join(map(str, choices)), value)


@dataclass
class ZeroConfig:
    stage: int = 2  # 0: data parallel; 1: + optimizer states sharded; 2: + gradients; 3: + parameters
    offload_optimizer: bool = False
    offload_param: bool = False
    overlap_comm: bool = False
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 50_000_000
    allgather_bucket_size: int = 50_000_000

    def __post_init__(self) -> None:
        check_choice("zero.stage", self.stage, (0, 1, 2, 3))
        if self.offload_param and self.stage != 3:
            raise ValueError("zero.offload_param needs zero.stage=3")


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

    def __post_init__(self) -> None:
        for key in ("lr", "min_lr", "eps", "grad_clip", "weight_decay"):
            check(f"optim.{key}", getattr(self, key) >= 0, ">= 0", getattr(self, key))
        check("optim.warmup_steps", self.warmup_steps >= 0, ">= 0", self.warmup_steps)
        check("optim.betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              "two numbers in [0, 1)", self.betas)
        if self.lr_decay_steps is not None:
            check("optim.lr_decay_steps", self.lr_decay_steps >= 1, ">= 1 (or null)", self.lr_decay_steps)


@dataclass
class DataConfig:
    manifest: str = "outputs/corpus/manifest.json"
    seed: int = 1234
    # Share of the packed sequences held out for validation loss.
    val_fraction: float = 0.05
    # Micro batches read ahead by the loader's background thread (pinned buffers on CUDA).
    prefetch: int = 4

    def __post_init__(self) -> None:
        check("data.val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)", self.val_fraction)
        check("data.prefetch", self.prefetch >= 1, ">= 1", self.prefetch)


@dataclass
class TrainConfig:
    max_steps: int = 100
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 needs a GPU)
    seed: int = 1234
    # Steps between metrics rows (each also logs the first step of a process, evaluations,
    # checkpoints and the last step). Only these steps wait for the device and reduce over
    # the ranks; a row's loss, tokens/s and MFU are means over the steps since the last row.
    log_every_steps: int = 10
    eval_every_steps: int = 0  # 0: only at the end
    eval_batches: int = 4
    # A tqdm bar on rank 0's console (shown only when stderr is a terminal).
    progress_bar: bool = True
    # torch.compile each transformer block (Inductor); off by default (compiling costs
    # minutes on a CPU, and pays on GPUs).
    compile: bool = False

    def __post_init__(self) -> None:
        check_choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        check("train.max_steps", self.max_steps >= 0, ">= 0", self.max_steps)
        for key in ("micro_batch_size", "grad_accum_steps", "log_every_steps", "eval_batches"):
            check(f"train.{key}", getattr(self, key) >= 1, ">= 1", getattr(self, key))
        check("train.eval_every_steps", self.eval_every_steps >= 0, ">= 0 (0: only at the end)",
              self.eval_every_steps)


@dataclass
class CheckpointConfig:
    every_steps: int = 50  # 0: none along the way
    keep_last: int = 3
    at_end: bool = True  # also after the last step (off for benchmarks)

    def __post_init__(self) -> None:
        check("checkpoint.every_steps", self.every_steps >= 0, ">= 0 (0: none along the way)", self.every_steps)
        check("checkpoint.keep_last", self.keep_last >= 0, ">= 0 (0: all)", self.keep_last)


@dataclass
class ClusterConfig:
    """Where `python -m launch` starts the ranks (conf/cluster/<name>.yaml; docs/multinode.md)."""

    name: str = "local"  # local | torchrun | hostfile | slurm | ray
    # Training processes per node (ray: workers in all; hostfile: the hostfile's slots decide).
    nproc: int = 2
    launcher: str = "torchrun"  # local: torchrun | deepspeed
    # Rendezvous host (torchrun: the c10d store; hostfile: "" means the hostfile's first host).
    master_addr: str = "127.0.0.1"
    master_port: Optional[int] = None  # None: a free port (local), 29500 (across nodes)
    # Accelerator type for DeepSpeed; None: cuda when torch sees a GPU, else cpu.
    accelerator: Optional[str] = None
    # Print the exact commands (or sbatch script, or Ray trainer) instead of running them.
    dry_run: bool = False
    # Environment variables set for every rank on every node.
    env: Dict[str, str] = field(default_factory=dict)
    # Restarts of the worker group after a worker fails (torchrun --max-restarts; Ray
    # max_failures); each restart resumes from the latest complete checkpoint.
    max_restarts: int = 0
    # torchrun, slurm: number of nodes; torchrun also takes elastic "MIN:MAX".
    nnodes: str = "1"
    # torchrun: this node's rank; node 0 hosts the c10d store. None: torchrun guesses the host
    # from the rendezvous address.
    node_rank: Optional[int] = None
    # torchrun: rendezvous id shared by the nodes of one job; None: the run_dir's name.
    rdzv_id: Optional[str] = None
    # hostfile: DeepSpeed hostfile ("host slots=N" lines) and the runner that reaches the hosts.
    hostfile: Optional[str] = None
    multinode_runner: str = "pdsh"  # pdsh | openmpi
    # slurm: the allocation; sbatch_args are more #SBATCH options (e.g. --account=NAME).
    gpus_per_node: int = 0
    partition: Optional[str] = None
    time: str = "01:00:00"
    job_name: str = "ccpretrain"
    sbatch_args: List[str] = field(default_factory=list)
    # ray: cluster address (None: RAY_ADDRESS, else a local Ray); one GPU per worker or none.
    address: Optional[str] = None
    use_gpu: bool = False

    def __post_init__(self) -> None:
        check_choice("cluster.name", self.name, ("local", "torchrun", "hostfile", "slurm", "ray"))
        check_choice("cluster.launcher", self.launcher, ("torchrun", "deepspeed"))
        check_choice("cluster.multinode_runner", self.multinode_runner, ("pdsh", "openmpi"))
        check("cluster.nproc", self.nproc >= 1, ">= 1", self.nproc)
        check("cluster.max_restarts", self.max_restarts >= 0, ">= 0", self.max_restarts)


@dataclass
class MetricsConfig:
    # Peak dense FLOP/s of one device in TFLOP/s for MFU; None: known GPUs are looked up, on
    # other devices MFU is not reported (null).
    peak_tflops: Optional[float] = None
    # TensorBoard event files in run_dir/tensorboard (rank 0), beside metrics.jsonl.
    tensorboard: bool = True


@dataclass
class EvalConfig:
    """Zero-shot evaluation (pretrain/evaluate.py; docs/training.md, "Zero-shot evaluation")."""

    # In training: every N steps and after the last step; 0: never in training (evaluate a run
    # afterwards with `python -m pretrain.evaluate RUN_DIR`).
    every_steps: int = 0
    # Any of lambada (last-word accuracy and perplexity), wikitext2 (bits per byte); [] for none.
    tasks: List[str] = field(default_factory=lambda: ["lambada", "wikitext2"])
    # Evaluate only the first N examples of each task (LAMBADA passages, WikiText-2 articles).
    limit: Optional[int] = None
    # Sequences per forward pass on each rank.
    batch_size: int = 16
    # Data files; conf/pretrain.yaml points them into the shared sample data (CCP_SHARED_DATA).
    lambada_path: Optional[str] = None
    wikitext_path: Optional[str] = None
    # Bits per byte: windows of seq_len tokens advance by this many (None: seq_len // 2), and
    # each token is scored once, in the first window that reaches it past the previous one.
    wikitext_stride: Optional[int] = None

    def __post_init__(self) -> None:
        known = ("lambada", "wikitext2")
        unknown = [t for t in self.tasks if t not in known]
        if unknown:
            raise ValueError(f"eval.tasks: unknown task(s) {unknown}; known: {', '.join(known)}")
        check("eval.every_steps", self.every_steps >= 0, ">= 0 (0: not in training)", self.every_steps)
        check("eval.batch_size", self.batch_size >= 1, ">= 1", self.batch_size)
        if self.limit is not None:
            check("eval.limit", self.limit >= 1, ">= 1 (or null for all)", self.limit)
        if self.wikitext_stride is not None:
            check("eval.wikitext_stride", self.wikitext_stride >= 1, ">= 1 (or null)", self.wikitext_stride)


@dataclass
class DebugConfig:
    """Hooks for tests; off in real runs."""

    # Each rank appends the global sample indices it trains on to run_dir/samples/rank_R.jsonl.
    record_samples: bool = False
    # Seconds each rank sleeps inside the checkpoint save at step sleep_in_save_step (0: every
    # save), after writing its files and before the checkpoint is renamed complete (so that a
    # test can kill a rank at that moment).
    sleep_in_save_s: float = 0.0
    sleep_in_save_step: int = 0


@dataclass
class PretrainConfig:
    run_dir: str = "runs/tiny"
    # auto: continue from run_dir/checkpoints/latest when there is one; never: start fresh
    # (refuses a run_dir that already has checkpoints); a run directory: continue that run with
    # its saved config.yaml (command-line overrides on top, see pretrain/resume.py); or a
    # checkpoint folder to start from.
    resume: str = "auto"
    model: ModelConfig = field(default_factory=ModelConfig)
    zero: ZeroConfig = field(default_factory=ZeroConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    # Raw DeepSpeed config keys merged last over the generated config (escape hatch).
    deepspeed: Dict[str, Any] = field(default_factory=dict)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainConfig)
