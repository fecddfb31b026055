"""Typed schema for `conf/dataprep.yaml`: unknown keys and wrong types stop the job at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class IngestConfig:
    input_dir: str = "${shared_data}/warc"
    # Files of input_dir to read (fnmatch patterns); each file is one task.
    patterns: List[str] = field(default_factory=lambda: ["*.warc.gz", "*.warc", "*.wet.gz"])
    # Payloads larger than this are skipped (reason too_large).
    max_payload_bytes: int = 2_000_000


@dataclass
class FilterConfig:
    min_chars: int = 200
    min_words: int = 30


@dataclass
class DedupConfig:
    exact: bool = True
    fuzzy: bool = True
    # MinHash over word n-gram shingles; LSH keeps pairs of estimated Jaccard >= threshold.
    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    seed: int = 1


@dataclass
class TokenizerConfig:
    # A tokenizer.json to use as is (e.g. ${shared_data}/tokenizer/gpt2/tokenizer.json);
    # None: train a byte-level BPE on the deduplicated corpus.
    path: Optional[str] = None
    vocab_size: int = 4096
    min_frequency: int = 2
    eod_token: str = "<|endoftext|>"
    # At most this many documents feed tokenizer training.
    train_docs: int = 100_000


@dataclass
class ShardConfig:
    shard_tokens: int = 16_777_216


@dataclass
class RayConfig:
    # None: RAY_ADDRESS when set, else a local Ray started for this job.
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    object_store_memory: Optional[int] = 268_435_456


@dataclass
class DataprepConfig:
    shared_data: str = "../shared/data"
    output_dir: str = "outputs/corpus"
    ingest: IngestConfig = field(default_factory=IngestConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def register() -> None:
    ConfigStore.instance().store(name="dataprep_schema", node=DataprepConfig)
