"""Training samples over token shards: a pure function of (manifest, seed, global sample index).

The training shards' documents (each ending in the end-of-document token) form one flat token
stream. It is cut into windows of seq_len tokens (a sample reads seq_len + 1: the inputs and the
targets shifted by one); each epoch over them is a seeded bijection, computed per index (a
Feistel network), never materialized, so memory and startup stay flat at any corpus size.
Nothing depends on what was read before, so a resumed run continues by index instead of
replaying consumed batches.

Validation reads documents dataprep held out of training, per mixture source (the manifest's
validation shards: `Splits`). A manifest made before those existed gets the older hold-out: a
seeded bijection puts `val_fraction` of the training stream's windows apart.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dataprep.shards import shard_prefix, stream_shards


class TokenStream:
    """The training shards of a manifest (or, with `source`, that mixture source's validation
    shards) as one flat, memory-mapped token sequence.

    Built from the manifest alone (each shard's token count, and a size check of its .bin), so
    that startup and memory do not grow with the documents: a corpus of 10^9 documents has
    gigabytes of .idx (document boundaries the stream does not need) and tens of thousands of
    shards. The .bin files are mapped when first read, at most `open_shards` at a time (least
    recently read unmapped first): a rank never holds a descriptor per shard."""

    OPEN_SHARDS = 64

    def __init__(self, manifest_path: str | Path, source: str | None = None, open_shards: int = OPEN_SHARDS):
        self.manifest_path = Path(manifest_path)
        if not self.manifest_path.is_file():
            raise FileNotFoundError(
                f"no shard manifest at {self.manifest_path} (run `python -m dataprep` first, "
                "or set data.manifest)"
            )
        self.manifest = json.loads(self.manifest_path.read_text())
        self.source = source
        root = self.manifest_path.parent
        entries = stream_shards(self.manifest, source)
        self.dtype = np.dtype(self.manifest.get("dtype", "uint16"))
        self.paths = [str(shard_prefix(root, s)) + ".bin" for s in entries]
        for path, entry in zip(self.paths, entries):
            held = os.path.getsize(path) // self.dtype.itemsize
            if held != entry["tokens"] or os.path.getsize(path) % self.dtype.itemsize:
                raise ValueError(f"shard {entry['name']} holds {held} tokens, the manifest says {entry['tokens']}")
        self.offsets = np.cumsum([0] + [int(s["tokens"]) for s in entries])
        self.num_tokens = int(self.offsets[-1])
        self.open_shards = max(1, open_shards)
        self._mapped: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def _tokens(self, i: int) -> np.ndarray:
        """Shard i's tokens, memory-mapped (the least recently read shard unmapped when too many are)."""
        with self._lock:
            tokens = self._mapped.pop(i, None)
            if tokens is None:
                tokens = np.memmap(self.paths[i], dtype=self.dtype, mode="r")
                while len(self._mapped) >= self.open_shards:
                    self._mapped.popitem(last=False)
            self._mapped[i] = tokens
            return tokens

    def read(self, start: int, length: int, out: np.ndarray | None = None) -> np.ndarray:
        """Tokens [start, start + length) of the stream, crossing shard boundaries as needed
        (into `out` when given)."""
        if out is None:
            out = np.empty(length, dtype=np.int64)
        filled = 0
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos = start - int(self.offsets[i])
        while filled < length:
            if self.offsets[i + 1] > self.offsets[i]:  # an empty shard maps nothing
                chunk = self._tokens(i)[pos : pos + length - filled]
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


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_U64 = (1 << 64) - 1


class WindowOrder:
    """A seeded bijection of [0, n): a balanced Feistel network over the smallest even number of
    bits that holds n, cycle-walked back into range. Computed per index, so it costs O(1) memory
    and startup whatever n is (10^9 windows included), and it is a pure function of (key, index).
    """

    ROUNDS = 6

    def __init__(self, n: int, key: tuple[int, ...]):
        if n < 1:
            raise ValueError(f"an order needs at least one element, not {n}")
        self.n = int(n)
        bits = max(2, int(self.n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = np.uint64((1 << self.half) - 1)
        self.keys = np.random.SeedSequence(list(key)).generate_state(self.ROUNDS, dtype=np.uint64)
        self._int_keys = [int(k) for k in self.keys]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        shift, mask = np.uint64(self.half), self.mask
        left, right = x >> shift, x & mask
        z = np.empty_like(x)
        for key in self.keys:
            # Round function: splitmix64's finaliser of (right ^ key): every bit moves every bit.
            np.bitwise_xor(right, key, out=z)
            z ^= z >> _S30
            z *= _M1
            z ^= z >> _S27
            z *= _M2
            z ^= z >> _S31
            z &= mask
            z ^= left
            left, right, z = right, z, left
        return (left << shift) | right

    def _encrypt_one(self, x: int) -> int:
        """`_encrypt` of one Python int (the same function; cheaper than numpy for a few)."""
        half, mask = self.half, int(self.mask)
        left, right = x >> half, x & mask
        for key in self._int_keys:
            z = right ^ key
            z ^= z >> 30
            z = (z * 0xBF58476D1CE4E5B9) & _U64
            z ^= z >> 27
            z = (z * 0x94D049BB133111EB) & _U64
            z ^= z >> 31
            left, right = right, left ^ (z & mask)
        return (left << half) | right

    def __call__(self, index) -> np.ndarray:
        """The images of `index` (an int or an array of ints in [0, n)) as int64."""
        shape = np.shape(index)
        x = np.atleast_1d(np.asarray(index, dtype=np.uint64)).copy()
        if x.size and int(x.max()) >= self.n:
            raise IndexError(f"index {int(x.max())} is outside an order of {self.n}")
        if x.size <= 64:  # numpy's per-call cost outweighs its speed on a few values
            out = []
            for v in x.tolist():
                v = self._encrypt_one(v)
                while v >= self.n:
                    v = self._encrypt_one(v)
                out.append(v)
            return np.array(out, dtype=np.int64).reshape(shape)
        y = self._encrypt(x)
        out = y >= np.uint64(self.n)
        while out.any():  # at most 4x the domain: a few walks at most
            y[out] = self._encrypt(y[out])
            out = y >= np.uint64(self.n)
        return y.astype(np.int64).reshape(shape)


class PackedSamples:
    """Fixed-length samples (inputs, targets) of the token stream for one split.

    The stream is cut into windows of seq_len tokens (a sample reads seq_len + 1: the targets
    are the inputs shifted by one). Split "all" is every window. Otherwise a seeded bijection of
    the windows (`WindowOrder`) puts `val_fraction` of them first: those are split "val", the
    rest split "train". Epoch e of a split is another seeded bijection of it. Nothing is
    materialized: memory and startup do not grow with the corpus.
    """

    def __init__(self, stream: TokenStream, seq_len: int, seed: int, split: str = "train",
                 val_fraction: float = 0.05):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be train, val or all, not {split!r}")
        self.stream, self.seq_len, self.seed = stream, seq_len, seed
        n_windows = (stream.num_tokens - 1) // seq_len
        if n_windows < (1 if split == "all" else 2):
            what = f"validation shards of {stream.source}" if stream.source else "training shards"
            raise ValueError(
                f"the {what} of {stream.manifest_path} hold {stream.num_tokens} tokens: too few for "
                f"{'a sample' if split == 'all' else 'even two samples'} of seq_len={seq_len}"
            )
        n_val = min(n_windows - 1, max(1, round(n_windows * val_fraction))) if val_fraction > 0 and split != "all" else 0
        self.holdout = WindowOrder(n_windows, (seed, 0))
        self.offset, self.size = (0, n_val) if split == "val" else (n_val, n_windows - n_val)
        self._epoch_order: tuple[int, WindowOrder] | None = None

    def __len__(self) -> int:
        return self.size

    def _order(self, epoch: int) -> WindowOrder:
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            self._epoch_order = (epoch, WindowOrder(self.size, (self.seed, 1, epoch)))
        return self._epoch_order[1]

    def split_windows(self, positions) -> np.ndarray:
        """The windows at `positions` in [0, len(self)) of this split, in no epoch's order."""
        return self.holdout(self.offset + np.asarray(positions, dtype=np.int64))

    def windows(self, indices) -> np.ndarray:
        """The windows (positions in the stream, in units of seq_len) of global sample indices."""
        indices = np.asarray(indices, dtype=np.int64)
        epochs, positions = np.divmod(indices, self.size)
        first, last = int(epochs.min(initial=0)), int(epochs.max(initial=0))
        if first == last:
            return self.split_windows(self._order(first)(positions))
        out = np.empty_like(positions)
        for epoch in range(first, last + 1):
            at = epochs == epoch
            out[at] = self._order(epoch)(positions[at])
        return self.split_windows(out)

    def window(self, index: int) -> int:
        """The window of global sample `index`."""
        return int(self.windows([index])[0])

    def tokens(self, indices, out: np.ndarray | None = None) -> np.ndarray:
        """(len(indices), seq_len + 1) int64 tokens of the samples: inputs are [:, :-1], targets
        [:, 1:]. `out` (e.g. a pinned buffer) is filled in place when given."""
        return self.read_windows(self.windows(indices), out)

    def read_windows(self, windows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The tokens of `windows` (from `windows()`), one row each."""
        if out is None:
            out = np.empty((len(windows), self.seq_len + 1), dtype=np.int64)
        for row, w in enumerate(windows.tolist()):
            self.stream.read(w * self.seq_len, self.seq_len + 1, out=out[row])
        return out

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = self.tokens([index])[0]
        return tokens[:-1], tokens[1:]

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(self.tokens(indices))
        return t[:, :-1], t[:, 1:]


@dataclass
class Splits:
    """What a run trains on and evaluates: the training samples, and the validation sets with
    their weights in the mixture's val_loss."""

    train: PackedSamples
    validation: dict[str, PackedSamples]  # by mixture source; "" for windows held out of the training stream
    weights: dict[str, float]  # sum to 1
    how: str  # one line for the log

    @classmethod
    def of(cls, stream: TokenStream, seq_len: int, seed: int, val_fraction: float) -> "Splits":
        """The training stream's windows for training; each source's validation shards for
        validation, val_loss weighting the sources by the mixture's target weights. A manifest
        without validation shards: `val_fraction` of the training windows held out instead."""
        held = stream.manifest.get("validation")
        if held is None:
            train = PackedSamples(stream, seq_len, seed, "train", val_fraction)
            if val_fraction <= 0:
                return cls(train, {}, {}, "validation: none (the manifest holds no validation shards; "
                                          "data.val_fraction=0)")
            return cls(train, {"": PackedSamples(stream, seq_len, seed, "val", val_fraction)}, {"": 1.0},
                       f"validation: {val_fraction:.1%} of the training windows (data.val_fraction): the "
                       "manifest holds no validation shards (made before dataprep held documents out), so "
                       "documents the mixture repeats can sit in both splits and val_loss may be optimistic")
        validation, left_out = {}, []
        for name in held["sources"]:
            source = TokenStream(stream.manifest_path, name)
            if source.num_tokens > seq_len:
                validation[name] = PackedSamples(source, seq_len, seed, "all")
            else:
                left_out.append(f"{name} ({source.num_tokens} tokens)")
        targets = {name: float(stream.manifest["sources"][name]["target_weight"]) for name in validation}
        total = sum(targets.values())
        weights = {name: w / total for name, w in targets.items()} if total else {}
        how = ("validation: held-out documents of " + ", ".join(f"{n} ({len(s)} windows)" for n, s in validation.items())
               + "; val_loss weights them by the mixture's target weights; data.val_fraction is not used"
               + (f"; too few held-out tokens for a window: {', '.join(left_out)}" if left_out else ""))
        return cls(PackedSamples(stream, seq_len, seed, "all"), validation, weights, how)
