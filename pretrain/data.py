"""Training samples over token shards: a pure function of (manifest, seed, global sample index).

The shards' documents (each ending in the end-of-document token) form one flat token stream.
It is cut into windows of seq_len + 1 tokens (the inputs and the targets shifted by one); a
seeded permutation holds out `val_fraction` of the windows for validation, and each epoch over
the rest is another seeded permutation. Nothing depends on what was read before, so a resumed
run continues by index instead of replaying consumed batches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dataprep.shards import IndexedShard


class TokenStream:
    """All shards of a manifest as one flat, memory-mapped token sequence."""

    def __init__(self, manifest_path: str | Path):
        self.manifest_path = Path(manifest_path)
        if not self.manifest_path.is_file():
            raise FileNotFoundError(
                f"no shard manifest at {self.manifest_path} (run `python -m dataprep` first, "
                "or set data.manifest)"
            )
        self.manifest = json.loads(self.manifest_path.read_text())
        root = self.manifest_path.parent
        self.shards = [IndexedShard(root / s["name"]) for s in self.manifest["shards"]]
        for shard, entry in zip(self.shards, self.manifest["shards"]):
            if shard.num_tokens != entry["tokens"]:
                raise ValueError(
                    f"shard {entry['name']} holds {shard.num_tokens} tokens, "
                    f"the manifest says {entry['tokens']}"
                )
        self.offsets = np.cumsum([0] + [s.num_tokens for s in self.shards])
        self.num_tokens = int(self.offsets[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream, crossing shard boundaries as needed."""
        out = np.empty(length, dtype=np.int64)
        filled = 0
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos = start - int(self.offsets[i])
        while filled < length:
            chunk = self.shards[i].tokens[pos : pos + length - filled]
            out[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
            i, pos = i + 1, 0
        return out


def data_fingerprint(manifest: dict) -> str:
    """Names, sizes and checksums of a manifest's shards (not its path): the same fingerprint
    means the same token stream, so a checkpoint can check it continues on the data it began on."""
    shards = [[s.get("name"), s.get("tokens"), s.get("bin_sha256", s.get("sha256"))] for s in manifest["shards"]]
    return hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BatchLayout:
    """Which global sample indices a rank reads at a step: the global batch of a step is
    micro_batch_size x grad_accum_steps x world_size consecutive indices."""

    micro_batch_size: int
    grad_accum_steps: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps * self.world_size

    def indices(self, step: int, micro_step: int, rank: int) -> range:
        start = (
            step * self.global_batch
            + micro_step * self.micro_batch_size * self.world_size
            + rank * self.micro_batch_size
        )
        return range(start, start + self.micro_batch_size)


class PackedSamples:
    """Fixed-length samples (inputs, targets) of the token stream for one split."""

    def __init__(self, stream: TokenStream, seq_len: int, seed: int, split: str = "train",
                 val_fraction: float = 0.05):
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, not {split!r}")
        self.stream, self.seq_len, self.seed = stream, seq_len, seed
        n_windows = (stream.num_tokens - 1) // seq_len
        if n_windows < 2:
            raise ValueError(
                f"{stream.manifest_path} holds {stream.num_tokens} tokens: too few for even two "
                f"samples of seq_len={seq_len}"
            )
        n_val = min(n_windows - 1, max(1, round(n_windows * val_fraction))) if val_fraction > 0 else 0
        perm = np.random.default_rng([seed, 0]).permutation(n_windows)
        self.windows = np.sort(perm[:n_val]) if split == "val" else np.sort(perm[n_val:])
        self._epoch, self._order = -1, None

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, index: int) -> int:
        """The window (position in the stream, in units of seq_len) of global sample `index`."""
        epoch, i = divmod(index, len(self.windows))
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.windows))
            self._epoch = epoch
        return int(self.windows[self._order[i]])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.stream.read(self.window(index) * self.seq_len, self.seq_len + 1)
        return tokens[:-1], tokens[1:]

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self[i] for i in indices))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
