"""What a run reports: metrics.jsonl (one JSON object per logged step) and TensorBoard event
files, both written by rank 0; MFU's peak FLOP/s; memory.

MFU = (training FLOPs per token x tokens per second) / (peak FLOP/s per device x devices), with
FLOPs per token = 6N + 12·L·d·T (pretrain/model.py: GPT.flops_per_token; docs/training.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import psutil
import torch

log = logging.getLogger(__name__)

# Peak dense throughput per device, TFLOP/s, by the precision its matmuls run in (vendor data
# sheets, without sparsity). "tf32": fp32 tensors on tensor cores; "fp32": plain CUDA cores.
# H100 and H200 SXM share one compute die; the H100 PCIe part is clocked lower. Names are
# matched in order, so the more specific ones come first.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "A10G": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
}


def matmul_precision(precision: str) -> str:
    """What the matmuls of a run at `precision` (train.precision) run in: bf16 and fp16 as
    such; fp32 on tensor cores (tf32) when torch allows TF32 matmuls, else plain fp32."""
    if precision in ("bf16", "fp16"):
        return precision
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return "tf32" if tf32 else "fp32"


def peak_for(device_name: str, matmul: str) -> Optional[float]:
    """The dense peak of a device (by its CUDA name) at a matmul precision, if known."""
    for key, peaks in PEAK_TFLOPS.items():
        if key in device_name:
            return peaks[matmul]
    return None


def peak_tflops(configured: Optional[float], precision: str = "bf16") -> Optional[float]:
    """metrics.peak_tflops when set, else the known peak of this GPU at the precision the run's
    matmuls use, else None (no MFU)."""
    if configured:
        return configured
    if torch.cuda.is_available():
        return peak_for(torch.cuda.get_device_name(), matmul_precision(precision))
    return None


def memory_gb(comm) -> dict:
    """Largest resident set size (and, on GPUs, peak allocated device memory) over the ranks;
    reduced as one tensor on the run's device (`comm`: pretrain.comm.Collectives)."""
    values = [psutil.Process().memory_info().rss / 2**30]
    cuda = comm.device.type == "cuda"
    if cuda:
        values.append(torch.cuda.max_memory_allocated(comm.device) / 2**30)
    reduced = comm.max(comm.tensor(values)).tolist()
    out = {"rss_gb": round(reduced[0], 3)}
    if cuda:
        out["cuda_max_allocated_gb"] = round(reduced[1], 3)
    return out


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool, resume_step: int, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if self.path.exists():
            # Steps after the checkpoint we resume from were never saved: they are redone.
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("metrics.tensorboard: the tensorboard package is not installed; skipping")
            else:
                # purge_step: TensorBoard hides events a crashed run wrote after the checkpoint.
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step + 1)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    group = "val" if key.startswith("val_") else "train"
                    self.writer.add_scalar(f"{group}/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def per_source_losses(record: dict) -> str:
    """' (crawl 6.0123, books 6.4567)': a metrics row's validation loss per source, if it has any."""
    losses = [f"{key.split('/', 1)[1]} {value:.4f}" for key, value in record.items() if key.startswith("val_loss/")]
    return f" ({', '.join(losses)})" if losses else ""
