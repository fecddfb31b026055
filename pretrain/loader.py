"""The training input pipeline of one rank: the micro batches of the steps ahead, read from the
memory-mapped shards by a background thread while the current step runs.

On CUDA the batches are read into a ring of pinned host buffers and copied with
`non_blocking=True`; a buffer is refilled only after the CUDA event recorded behind its copy has
completed. Elsewhere each batch gets a fresh host array. What a rank reads at (step, micro step)
is fixed by `BatchLayout` and `PackedSamples`, so prefetching changes when a batch is read, never
which one.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from pretrain.data import BatchLayout, PackedSamples


@dataclass
class MicroBatch:
    step: int  # the optimizer step this micro batch belongs to (0-based)
    micro: int
    indices: range  # the global sample indices it holds
    inputs: torch.Tensor  # (micro batch, seq_len) on the device
    targets: torch.Tensor


_END = object()
CHUNK = 64  # micro batches whose sample windows are computed together


class Prefetcher:
    """Iterates over the micro batches of steps [start_step, end_step) for `rank`, `depth` of
    them read ahead. Use as a context manager (the reader thread stops on exit)."""

    def __init__(self, samples: PackedSamples, layout: BatchLayout, rank: int, start_step: int,
                 end_step: int, device: torch.device, depth: int = 4):
        self.samples, self.layout, self.rank = samples, layout, rank
        self.start_step, self.end_step = start_step, end_step
        self.device = torch.device(device)
        self.pinned = self.device.type == "cuda"
        self.depth = max(1, depth)
        self._ready: queue.Queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        # Pinned ring: depth buffers can wait in the queue, one is being copied, one is filled.
        self._ring = [self._buffer() for _ in range(self.depth + 2)] if self.pinned else []
        self._copied: list[Optional[torch.cuda.Event]] = [None] * len(self._ring)
        self._thread = threading.Thread(target=self._read, name="batch-prefetch", daemon=True)
        self._started = False

    def _buffer(self) -> torch.Tensor:
        shape = (self.layout.micro_batch_size, self.samples.seq_len + 1)
        return torch.empty(shape, dtype=torch.int64, pin_memory=True)

    def _plan(self) -> Iterator[tuple[int, int, range, np.ndarray]]:
        """(step, micro step, sample indices, their windows); the windows of CHUNK micro batches
        are computed in one vectorized call."""
        plan = ((step, micro, self.layout.indices(step, micro, self.rank))
                for step in range(self.start_step, self.end_step)
                for micro in range(self.layout.grad_accum_steps))
        b = self.layout.micro_batch_size
        while chunk := list(itertools.islice(plan, CHUNK)):
            windows = self.samples.windows(np.concatenate([np.asarray(i) for _, _, i in chunk]))
            for k, (step, micro, indices) in enumerate(chunk):
                yield step, micro, indices, windows[k * b:(k + 1) * b]

    def _read(self) -> None:
        try:
            for n, (step, micro, indices, windows) in enumerate(self._plan()):
                if self.pinned:
                    slot = n % len(self._ring)
                    if self._copied[slot] is not None:
                        self._copied[slot].synchronize()  # its last copy to the device is done
                    host = self._ring[slot]
                    self.samples.read_windows(windows, out=host.numpy())
                else:
                    slot, host = -1, torch.from_numpy(self.samples.read_windows(windows))
                if not self._put((step, micro, indices, slot, host)):
                    return
            self._put(_END)
        except BaseException as e:  # handed to the training thread, raised there
            self._put(e)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __enter__(self) -> "Prefetcher":
        if not self._started:
            self._thread.start()
            self._started = True
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(timeout=10)

    def __iter__(self) -> "Prefetcher":
        return self.__enter__()

    def __next__(self) -> MicroBatch:
        item = self._ready.get()
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        step, micro, indices, slot, host = item
        tokens = host.to(self.device, non_blocking=self.pinned)
        if self.pinned:
            event = torch.cuda.Event()
            event.record()
            self._copied[slot] = event
        return MicroBatch(step, micro, indices, tokens[:, :-1], tokens[:, 1:])

