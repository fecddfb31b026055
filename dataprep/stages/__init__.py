"""The corpus job's stages, one module each, in the order dataprep/pipeline.py runs them:

  extract   per input archive: ingest, extract, language id, heuristic filters
  quality   the quality classifier (trained once, or given), then per file: score and select
  dedup     exact and fuzzy deduplication of the crawl (dataprep/dedup_stages.py)
  sources   per file of the other mixture sources: documents
  decontam  per documents file of every source: drop (or flag) those sharing an n-gram with an
            evaluation set (the sets' index built once)
  tokenize  the tokenizer (trained once, or given), then per documents file: tokens
  holdout   per source, the documents held out for validation; per tokens file: the training
            documents that share text with them
  shards    the weighted mixture and the validation shards: one shard set, its lineage, the manifest

Each owns one folder of output_dir (dataprep/layout.py) and has the same shape: `NAME`, its Ray
task(s), and `run(layout, inputs) -> (outputs, stats)`. `inputs` holds the job's config, its input
files and every earlier stage's outputs by name; `stats` holds the stage's entries of stats.json
by section ("stages", "sources", "mixture"). A stage whose tasks leave completion markers also has
`fingerprints(inputs)`: for each of its outputs, what shapes it (dataprep/fingerprint.py) - its
config keys, its input files and the fingerprints of the earlier outputs it is made from - computed
from the config, the input files and the earlier stages' outputs (which of them there are), before
its own tasks run; its markers hold them, so that a rerun redoes what another config or input
would make otherwise (dataprep/tasks.py: Reruns).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from dataprep.config import DataprepConfig, MixtureSourceConfig
from dataprep.readers import glob_files, list_archives, task_name
from dataprep.tasks import Reruns


@dataclass(frozen=True)
class StageInputs:
    cfg: DataprepConfig
    archives: dict[str, Path | str]  # task -> input archive: a local path, or a URL
    source_files: dict[str, dict[str, Path]]  # mixture source read from files -> task -> file
    outputs: dict[str, Any] = field(default_factory=dict)  # each earlier stage's outputs, by name
    reruns: Reruns = field(default_factory=Reruns)  # what a rerun does with work made otherwise
    # Computed once per job, shared by every copy (fingerprints: each stage's, by name).
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, cfg: DataprepConfig) -> "StageInputs":
        """The job's input files, listed once; a missing input folder, or no archive in it, stops
        the job here (the mixture's files were checked with the config)."""
        archives = list_archives(cfg.ingest)
        sources = cfg.mixture.sources_or_crawl()
        return cls(cfg, {task_name(f): Path(f) if "://" not in f else f for f in archives},
                   {name: {task_name(f): f for f in glob_files(src.paths)}
                    for name, src in sources.items() if src.kind != "crawl"}, reruns=Reruns(cfg.rerun))

    @property
    def sources(self) -> dict[str, MixtureSourceConfig]:
        """The mixture's sources, in order (the crawl alone when none are configured)."""
        return self.cfg.mixture.sources_or_crawl()

    def after(self, stage: str, outputs: Any) -> "StageInputs":
        """These inputs and what `stage` returned: the next stage's inputs."""
        return replace(self, outputs={**self.outputs, stage: outputs})

    def memo(self, name: str, make: Callable[[], Any]) -> Any:
        """make(), computed once for the job under `name` (a stage's fingerprints: later stages
        ask for them again)."""
        if name not in self._memo:
            self._memo[name] = make()
        return self._memo[name]


def source_task_name(source: str, task: str) -> str:
    """The name of a task over one file of one mixture source (tasks of all sources share a stage)."""
    return f"{source}__{task}"
