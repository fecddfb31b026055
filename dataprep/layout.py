"""Where the corpus job keeps what it writes: every path under output_dir, in one place. Each stage
(dataprep/stages/) owns the folder of its name.

output_dir/
  extract/<task>.parquet, extract/dropped/<task>.parquet      documents after extract, language id, filters
  quality/model.safetensors, quality/<task>.parquet (+dropped) the quality classifier; scored, selected documents
  dedup/exact, signatures, bands, edges, components, clusters/ dedup stages (dataprep/dedup_stages.py)
  dedup/<task>.parquet, dedup/dropped/<task>.parquet          documents after dedup (the crawl)
  sources/<source>/<task>.parquet (+dropped)                  documents of the other mixture sources
  decontam/<source>/<task>.parquet (+dropped)                 every source's documents, decontaminated
  tokenize/<source>/<task>_00000.bin/.idx, <task>.parquet     tokens per document (+ id, url, source)
  holdout/<digest>/spans.npy                                  hashes of the held-out documents' spans
  <stage>/_done/<task>.json                                   completion markers (dataprep/tasks.py)
  tokenizer.json                                              the tokenizer (tokenize stage)
  shards/NNNNNN/shard_*.bin/.idx, shard_*.docs.parquet       one shard set: the mixture's shards, lineage,
  shards/NNNNNN/val_<source>_*.bin/.idx, ...docs.parquet       and each source's validation shards
  shards/metadata/<source>/<task>_00000.bin/.idx              each document's id, url, file (shards stage)
  manifest.json                                               the shard set in use (it names its folder)
  stats.json                                                  every stage's counts (dataprep/pipeline.py)
  report.html                                                 charts of stats.json and the manifest (dataprep/report.py)

A task is named after its input file (dataprep/readers.py: task_name).
"""

from __future__ import annotations

import os
from pathlib import Path

from dataprep.tasks import marker_path


class CorpusLayout:
    SHARD_PREFIX = "shard"  # shards are <root>/shard_00000.bin/.idx, ...

    def __init__(self, output_dir: str | Path):
        self.root = Path(output_dir).resolve()

    def stage_dir(self, stage: str, source: str | None = None) -> Path:
        """A stage's folder; the folder of one mixture source in stages that keep them apart."""
        return self.root / stage / source if source else self.root / stage

    def documents(self, stage: str, task: str, source: str | None = None) -> str:
        """The documents a stage kept from one task."""
        return str(self.stage_dir(stage, source) / f"{task}.parquet")

    def dropped(self, stage: str, task: str, source: str | None = None) -> str:
        """The documents a stage dropped from one task, each with its drop_reason."""
        return str(self.stage_dir(stage, source) / "dropped" / f"{task}.parquet")

    def marker(self, stage: str, name: str) -> Path:
        return marker_path(self.stage_dir(stage), name)

    def tokens(self, source: str, task: str) -> str:
        """The prefix of a task's tokens, `<prefix>.bin/.idx`: one sequence per document."""
        return str(self.stage_dir("tokenize", source) / f"{task}_00000")

    def token_counts(self, source: str, task: str) -> str:
        """Per document of a task's tokens, in order: id, url, source and its number of tokens."""
        return str(self.stage_dir("tokenize", source) / f"{task}.parquet")

    @property
    def quality_model(self) -> Path:
        return self.stage_dir("quality") / "model.safetensors"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    def shard_files(self) -> list[Path]:
        """Shard files beside the manifest: the layout of older versions, removed by the next run."""
        return sorted(self.root.glob(f"{self.SHARD_PREFIX}_*"))

    def shard_set(self, number: int) -> Path:
        """The folder of shard set `number`: each run of the shards stage writes a new one."""
        return self.stage_dir("shards") / f"{number:06d}"

    def shard_sets(self) -> list[Path]:
        """Every shard set folder there is, oldest first."""
        folder = self.stage_dir("shards")
        return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []

    def document_metadata(self, source: str) -> Path:
        """Where the shards stage keeps each document's id, url and file, memory-mapped."""
        return self.stage_dir("shards") / "metadata" / source

    def relative(self, path: str | Path) -> str:
        return os.path.relpath(path, self.root)
