"""The corpus job: its stages in order (dataprep/stages/), each run as `run(layout, inputs) ->
(outputs, stats)` on the outputs of those before it, and stats.json from what they report.

Per-file work runs as Ray tasks (dataprep/tasks.py); the few global decisions (the quality
classifier, which documents duplicate which, the tokenizer, the held-out documents, the mixture plan) are made once in the
driver from the tasks' small outputs. dataprep/layout.py says where everything is written.
"""

from __future__ import annotations

import logging
import time

from dataprep.config import DataprepConfig
from dataprep.layout import CorpusLayout
from dataprep.manifest import mixture_table
from dataprep.report import write_report
from dataprep.stages import StageInputs, decontam, dedup, extract, holdout, quality, shards, sources, tokenize
from dataprep.stats import table
from dataprep.tasks import ray_session, write_json

log = logging.getLogger("dataprep")

STAGES = (extract, quality, dedup, sources, decontam, tokenize, holdout, shards)


def run_stages(layout: CorpusLayout, inputs: StageInputs) -> dict:
    """Run every stage (a finished task is not run again); write and return stats.json."""
    t0 = time.perf_counter()
    layout.root.mkdir(parents=True, exist_ok=True)
    log.info("dataprep: %d input files from %s -> %s", len(inputs.archives), inputs.cfg.ingest.input_dir, layout.root)
    summary: dict[str, dict] = {}
    for stage in STAGES:
        outputs, stats = stage.run(layout, inputs)
        inputs = inputs.after(stage.NAME, outputs)
        for section, entries in stats.items():
            summary.setdefault(section, {}).update(entries)
    manifest = inputs.outputs[shards.NAME]
    summary.update(input_files=[str(p) for p in inputs.archives.values()], documents=manifest["total_documents"],
                   tokens=manifest["total_tokens"], seconds=round(time.perf_counter() - t0, 3))
    write_json(layout.stats, summary)
    log.info("\n%s", table(summary["stages"]))
    log.info("mixture:\n%s", mixture_table(manifest))
    held = manifest.get("validation")
    log.info("%d documents, %d tokens in %d shards%s: %s (%.1fs)", manifest["total_documents"],
             manifest["total_tokens"], len(manifest["shards"]),
             f"; validation: {held['total_documents']} documents, {held['total_tokens']} tokens" if held else "",
             layout.manifest, summary["seconds"])
    write_report(layout.root)
    return summary


def run(cfg: DataprepConfig) -> dict:
    """Run the corpus job on Ray (RAY_ADDRESS / ray.address, else a local Ray). Its inputs are
    listed first: a missing one stops the job before Ray starts."""
    inputs = StageInputs.of(cfg)
    with ray_session(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_memory):
        return run_stages(CorpusLayout(cfg.output_dir), inputs)
