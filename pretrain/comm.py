"""Every collective the training loop issues itself, on the engine's device.

NCCL, the backend of CUDA runs, has no CPU side: a CPU tensor handed to `all_reduce` in a CUDA
process group stops the run ("No backend type associated with device type cpu"). So the loop
never builds a host tensor for a collective: values are reduced as tensors on `device` (the
device the DeepSpeed engine computes on), and only the result is brought to the host, at the
steps that log, evaluate or save. DeepSpeed's own collectives are its business.
"""

from __future__ import annotations

import socket
from typing import Sequence

import torch
import torch.distributed as dist


class Collectives:
    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.active = dist.is_available() and dist.is_initialized()
        self.world = dist.get_world_size() if self.active else 1

    def tensor(self, values: Sequence[float] | float, dtype=torch.float64) -> torch.Tensor:
        """Host values as a tensor on the device (one small copy)."""
        return torch.as_tensor(values, dtype=dtype).to(self.device)

    def _all_reduce(self, t: torch.Tensor, op) -> torch.Tensor:
        if t.device != self.device:
            raise RuntimeError(f"a collective got a tensor on {t.device}; this run's device is {self.device}")
        if self.active and self.world > 1:
            dist.all_reduce(t, op=op)
        return t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of `t` over the ranks (in place; returned)."""
        self._all_reduce(t, dist.ReduceOp.SUM)
        if self.world > 1:
            t /= self.world
        return t

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(t, dist.ReduceOp.SUM)

    def max(self, t: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(t, dist.ReduceOp.MAX)

    def barrier(self) -> None:
        if self.active:
            if self.device.type == "cuda" and self.device.index is not None:
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()


def free_port() -> int:
    """A TCP port that is free on this machine right now (for the process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
