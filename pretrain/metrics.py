"""What a run reports: metrics.jsonl (one JSON object per logged step) and TensorBoard event
files, both written by rank 0; MFU's peak FLOP/s; memory.

MFU = (training FLOPs per token x tokens per second) / (peak FLOP/s per device x devices), with
FLOPs per token = 6N + 12·L·d·T (pretrain/model.py: GPT.flops_per_token; docs/training.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

import psutil
import torch

log = logging.getLogger(__name__)

# Peak dense bf16 tensor-core throughput per device, TFLOP/s (vendor data sheets, no sparsity).
# H100 and H200 (SXM) share the same compute; the H100 PCIe is lower (756).
PEAK_TFLOPS = {"A100": 312.0, "H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A10G": 125.0, "L4": 121.0}


def peak_tflops(configured: Optional[float]) -> Optional[float]:
    """metrics.peak_tflops when set, else the known peak of this GPU, else None (no MFU)."""
    if configured:
        return configured
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value
    return None


def memory_gb(reduce_max: Callable) -> dict:
    """Largest resident set size (and, on GPUs, peak allocated device memory) over the ranks."""
    values = [psutil.Process().memory_info().rss / 2**30]
    if torch.cuda.is_available():
        values.append(torch.cuda.max_memory_allocated() / 2**30)
    reduced = reduce_max(values, torch.distributed.ReduceOp.MAX)
    out = {"rss_gb": round(reduced[0], 3)}
    if len(reduced) > 1:
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
