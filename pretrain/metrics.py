"""metrics.jsonl: one JSON object per logged step, written by rank 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

# Peak dense bf16 tensor-core throughput per device, TFLOP/s (vendor data sheets, no sparsity).
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "A10G": 125.0, "L4": 121.0}


def peak_tflops(configured: Optional[float]) -> Optional[float]:
    if configured:
        return configured
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, value in PEAK_TFLOPS.items():
            if key in name:
                return value
    return None


class MetricsLog:
    def __init__(self, path: Path, enabled: bool, resume_step: int):
        self.path = Path(path)
        self.enabled = enabled
        if enabled and self.path.exists():
            # Steps after the checkpoint we resume from were never saved: they are redone.
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
